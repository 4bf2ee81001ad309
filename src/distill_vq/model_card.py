"""Model cards: `huggingface_hub` card data plus the `model_cards/` template, rendered from a run's real facts."""

from pathlib import Path

import jinja2
import jinja2.meta
from huggingface_hub import ModelCard, ModelCardData

from .evaluation import format_markdown_table
from .io_utils import write_text

TEMPLATE_PATH = Path(__file__).parent / "templates" / "distill_vq_template.md"
TAGS = ["faiss", "product-quantization", "dense-retrieval", "distill-vq"]
# Facts of a training run and its evaluation: a card rendered from a bare config (`card_facts_from_config`) has none
# of them and the template leaves their sections out; given one, all are needed.
RUN_FACTS = {
    "summary", "corpus_name", "num_docs", "loss", "num_teacher_candidates", "num_train_queries", "training_steps",
    "batch_size", "training_seconds", "num_eval_queries", "eval_name", "results_table",
}


def card_data(facts: dict) -> ModelCardData:
    """The card's YAML metadata: library, tags, the base encoder and the Hub dataset, when they are Hub ids."""
    return ModelCardData(
        library_name="distill-vq",
        base_model=facts["base_model"] if _is_hub_id(facts["base_model"]) else None,
        tags=TAGS,
        datasets=[facts["dataset_id"]] if facts.get("dataset_id") else None,
    )


def render_model_card(facts: dict, template_path: str | Path = TEMPLATE_PATH) -> ModelCard:
    """Render the template with `facts` (every variable it names must be given).

    Raises:
        ValueError: the template is missing, invalid, or names facts that were not given.
    """
    template_path = Path(template_path)
    if not template_path.is_file():
        raise ValueError(f"The model card template {template_path} is missing; reinstall distill-vq.")
    data = card_data(facts)
    template = template_path.read_text(encoding="utf-8")
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(
            f"The model card template {template_path} is invalid (line {error.lineno}): {error}"
        ) from error
    optional = {"card_data", "base_model_url"} | set(data.to_dict()) | (RUN_FACTS if RUN_FACTS.isdisjoint(facts) else set())
    missing = sorted(names - optional - set(facts))
    if missing:
        raise ValueError(f"The model card template {template_path} needs facts that were not given: {missing}.")
    base_model_url = f"https://huggingface.co/{facts['base_model']}" if data.base_model else facts["base_model"]
    return ModelCard.from_template(data, template_path=str(template_path), base_model_url=base_model_url, **facts)


def card_facts_from_config(config, model_id: str = "your-namespace/your-quantizer", nprobe: int | None = None) -> dict:
    """The facts a `DistillVQConfig` alone gives (no training run): the index, its encoder and a usage snippet."""
    return {
        "model_name": model_id.split("/")[-1], "model_id": model_id,
        "base_model": config.encoder_name_or_path or "unknown encoder", "embedding_dim": config.embedding_dim,
        "metric": config.metric, "index_factory": config.index_factory_string, "num_lists": config.num_lists,
        "nprobe": nprobe or config.default_nprobe, "num_subvectors": config.num_subvectors,
        "bits_per_subvector": config.bits_per_subvector, "use_rotation": config.use_rotation,
        "bytes_per_vector": f"{config.bytes_per_vector:g}",
    }


def card_facts_from_results(results: dict, model_id: str) -> dict:
    """The facts of a `distill-vq train` run (its `results.json`) for the card of the model at `model_id`."""
    return {**results, "model_name": Path(model_id).name or Path(model_id).resolve().name, "model_id": model_id,
            "results_table": format_markdown_table(results["results"])}


def write_model_card(path: str | Path, facts: dict) -> ModelCard:
    """Render the card (see `render_model_card`) and write it to `path` (e.g. `README.md`)."""
    card = render_model_card(facts)
    write_text(path, str(card))
    return card


def _is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub model id (`owner/name`) rather than a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()
