import pytest

from distill_vq import DistillVQConfig


def test_index_factory_string_and_bytes():
    config = DistillVQConfig(embedding_dim=384, num_lists=1024, num_subvectors=48, use_rotation=True)
    assert config.index_factory_string == "OPQ48,IVF1024,PQ48x8"
    assert config.bytes_per_vector == 48
    assert config.subvector_dim == 8 and config.codebook_size == 256


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_subvectors": 7}, "num_subvectors=7 does not divide embedding_dim=384"),
        ({"bits_per_subvector": 0}, "bits_per_subvector=0 is outside 1..16"),
        ({"bits_per_subvector": 17}, "bits_per_subvector=17 is outside 1..16"),
        ({"metric": "cosine"}, "metric='cosine' is unknown"),
        ({"num_lists": 0}, "num_lists=0 must be a positive integer"),
        ({"query_pooling": "max"}, "query_pooling='max' is unknown"),
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
