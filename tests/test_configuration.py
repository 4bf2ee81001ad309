import pytest

from distill_vq import DistillVQConfig


def test_index_factory_string_and_bytes():
    config = DistillVQConfig(embedding_dim=384, num_lists=1024, num_subvectors=48, use_rotation=True)
    assert config.index_factory_string == "OPQ48,IVF1024,PQ48x8"
    assert config.bytes_per_vector == 48
    assert config.num_codes == 48 and config.codebook_size == 256
    residual = DistillVQConfig(embedding_dim=384, num_lists=256, quantizer="rq", num_codebooks=16)
    assert residual.index_factory_string == "IVF256,RQ16x8_Nnone" and residual.bytes_per_vector == 16
    assert residual.beam_size == 5


def test_nprobe_defaults_to_an_eighth_of_the_lists_but_at_least_eight():
    assert [DistillVQConfig(num_lists=n).nprobe for n in (4, 16, 1024)] == [4, 8, 128]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_subvectors": 7}, "num_subvectors=7 does not divide embedding_dim=384"),
        ({"bits_per_subvector": 0}, "bits_per_subvector=0 is outside 1..16"),
        ({"bits_per_subvector": 17}, "bits_per_subvector=17 is outside 1..16"),
        ({"metric": "cosine"}, "metric='cosine' is unknown"),
        ({"num_lists": 0}, "num_lists=0 must be a positive integer"),
        ({"query_pooling": "max"}, "query_pooling='max' is unknown"),
        ({"num_lists": 8, "nprobe": 9}, "nprobe=9 must be between 1 and num_lists=8"),
        ({"num_lists": "16"}, "num_lists='16' must be an integer, not str; fix config.json"),
    ],
)
def test_invalid_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillVQConfig(**kwargs)


def test_config_round_trip(tmp_path):
    config = DistillVQConfig(embedding_dim=64, num_lists=8, num_subvectors=8, metric="l2", encoder_name_or_path="enc")
    config.save_pretrained(tmp_path)
    loaded = DistillVQConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
