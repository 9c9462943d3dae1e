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


import pandas as pd

from qvidcap.config import load_config
from qvidcap.features.clip_features import ClipFeatures
from qvidcap.model.inspection import (best_epoch, build_summary, loss_gap_verdict, standardisation_verdict,
                                      stream_similarity, training_story, training_summary)


def _history(distinct, cider, train=None, val=None):
    n = len(distinct)
    return pd.DataFrame({"epoch": range(n), "distinct_captions": distinct, "quick_cider": cider,
                         "train_caption": train or [2.0] * n, "val_caption": val or [1.5] * n,
                         "train_loss": [1.0] * n, "val_loss": [0.9] * n})


def test_the_training_story_follows_the_run():
    story = training_story(_history([1, 1, 1, 7, 2, 20], [26.0, 19.0, 39.0, 45.0, 30.0, 61.0],
                                    train=[3.2, 1.8, 1.6, 1.5, 1.4, 1.3]), load_config("smoke"))
    assert story.startswith("For the first 3 of 6 epochs (up to epoch 2)") and "(19.0 to 39.0)" in story
    assert "loss fell from 3.20 to 1.60 meanwhile" in story
    assert "From epoch 3 on, the captions differ (2 to 20 distinct of 40 per epoch)" in story
    assert "climbs to 61.0" in story and "`best/` holds epoch 5" in story
    never = training_story(_history([5, 9, 9], [30.0, 50.0, 40.0]), load_config("smoke"))
    assert never.startswith("The greedy captions of the 40 validation clips were never all the same")
    assert "`best/` holds epoch 1 (quick CIDEr 50.0" in never and "`last/` holds epoch 2 (40.0)" in never
    assert "still gives one caption" in training_story(_history([1, 1], [20.0, 30.0]), load_config("smoke"))


def test_best_epoch_is_the_first_highest_cider_as_the_trainer_keeps_it():
    assert best_epoch(_history([1, 2, 3], [10.0, 30.0, 30.0])) == 1
    assert best_epoch(pd.DataFrame({"epoch": [0, 1], "val_loss": [2.0, 1.0]})) == 1
    assert best_epoch(pd.DataFrame()) is None


def test_the_loss_gap_sentence_counts_epochs_and_names_the_config_dropouts():
    below = loss_gap_verdict(_history([1, 2], [1.0, 2.0], train=[2.0, 1.8], val=[1.5, 1.9]), load_config("smoke"))
    assert below.startswith("The validation caption loss is below the training loss in 1 of 2 epochs")
    assert "word dropout (0.25" in below and "dropout (heads 0.1, Q-Former 0.1)" in below
    gpu = loss_gap_verdict(_history([1], [1.0], train=[1.0], val=[2.0]), load_config("kaggle"))
    assert "in 0 of 1 epochs" in gpu and "word dropout" not in gpu and "generalises less well" in gpu


def test_summaries_carry_the_numbers_they_are_given():
    text = training_summary(_history([1, 4], [10.0, 30.0], train=[3.0, 1.5], val=[2.0, 1.2]), 376, "finished",
                            load_config("smoke"))
    assert "376 optimizer steps over 2 epochs" in text and "3.00 → 1.50" in text and "2.00 → 1.20" in text
    assert "30.0 at best (epoch 1" in text and "1 epoch(s) gave one caption" in text
    table = pd.DataFrame({"trainable": [10, 30], "frozen": [0, 60]}, index=["heads", "total"])
    built = build_summary(table, 5.1, 169, [5.0, 2.0, 1.0], ["a b", "c d"], ["a b", "c e"], 0.008, 0.2)
    assert "90 parameters, 30 of them trained (33%)" in built and "it starts where it should" in built
    assert "from 5.00 to 1.00" in built and "1 of 2 captions came back exactly" in built
    assert "check the initialisation" in build_summary(table, 9.0, 169, [9.0], ["a"], ["b"], 0.0, 0.0)


def _clip(temporal, context, objects):
    p = objects.shape[0]
    return ClipFeatures("v", temporal, context, objects, torch.zeros(p, 4), torch.ones(p), torch.zeros(p, dtype=torch.long),
                        torch.zeros(p, dtype=torch.long))


def test_stream_similarity_sees_a_shared_offset_that_standardising_removes():
    generator = torch.Generator().manual_seed(0)
    offset = 10 * torch.ones(16)
    clips = [_clip(offset + torch.randn(4, 16, generator=generator), offset + torch.randn(2, 16, generator=generator),
                   offset + torch.randn(3, 16, generator=generator)) for _ in range(30)]
    table = stream_similarity(clips)
    assert (table["mean cosine, as stored"] > 0.9).all() and (table["mean cosine, standardised"].abs() < 0.2).all()
    assert "point almost the same way" in standardisation_verdict(table)
    apart = stream_similarity([_clip(torch.randn(4, 16, generator=generator), torch.randn(2, 16, generator=generator),
                                     torch.randn(3, 16, generator=generator)) for _ in range(30)])
    assert "already differ between clips" in standardisation_verdict(apart)


def test_the_data_summaries_of_notebooks_01_and_02_read_their_tables():
    from qvidcap.data.explore import caption_summary, data_summary

    summary = pd.DataFrame({"split": ["train", "validation"], "referenced": [10, 4], "with video": [9, 4],
                            "usable": [9, 4], "skipped": [1, 0], "captions per clip": [10.0, 10.0],
                            "words per caption": [9.5, 8.25]})
    text = data_summary(summary, "vatex", "/data")
    assert "train 9 usable of 10 referenced clips, validation 4 usable of 4" in text
    assert "1 referenced clips have no video file; 1 records were skipped" in text and "8.2 to 9.5 words" in text
    captions = pd.DataFrame({"split": ["train", "train", "validation"], "caption": ["a red circle", "a red square", "a blue cone"],
                             "words": [3, 3, 3]})
    vocabulary = pd.DataFrame({"split": ["train", "validation"], "vocabulary": [4, 3],
                               "uses of words not in train (%)": [0.0, 66.67]})
    text = caption_summary(captions, vocabulary, n_words=2)
    assert "3 captions; 3.0 words on average (median 3, longest 3)" in text
    assert "4 distinct words in train; uses of words never seen in train: validation 66.67%" in text
    assert "content words: red, circle" in text
