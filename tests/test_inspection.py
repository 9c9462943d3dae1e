"""The sentences notebook 04 prints are computed from what its cells show."""
import torch

from qvidcap.model.inspection import memorisation_verdict, query_spread, specialisation_verdict


def test_the_memorisation_sentence_counts_exact_captions_and_words_in_place():
    refs = ["a red circle moves left.", "a big blue square grows", "two small green triangles bounce"]
    assert memorisation_verdict(refs, ["a red circle moves left", "a big blue square grows", "two small green triangles bounce"]
                                ).startswith("3 of 3 captions come back exactly, 100%")
    partly = memorisation_verdict(refs, ["a red circle moves left", "a red circle moves left", "a red circle moves left"])
    assert partly.startswith("1 of 3") and "only partly memorised" in partly


def test_query_spread_tells_identical_rows_from_specialised_ones():
    same = torch.full((4, 8), 1 / 8)
    apart = torch.eye(4, 8)
    assert query_spread(same) == 0.0 and query_spread(apart) > 0.7
    assert "still read the same tokens" in specialisation_verdict(same, same)
    assert "started to specialise" in specialisation_verdict(same, apart)
