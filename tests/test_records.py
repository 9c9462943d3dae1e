import pytest

from qvidcap.data.records import ClipRecord, VideoIdError, format_video_id, parse_video_id


@pytest.mark.parametrize("video_id, expected", [
    ("0wR5jVB-WPk_000417_000427", ("0wR5jVB-WPk", 417, 427)),
    ("8JW7yCjSyHg_000000_000010", ("8JW7yCjSyHg", 0, 10)),
    ("a_b_c-d_e_X_000001_000011", ("a_b_c-d_e_X", 1, 11)),  # underscores inside the YouTube id
    ("--__--__--_000100_000110", ("--__--__--", 100, 110)),
])
def test_video_ids_split_their_times_off_the_right(video_id, expected):
    assert parse_video_id(video_id) == expected


@pytest.mark.parametrize("bad", ["0wR5jVB-WPk", "0wR5jVB-WPk_417_427", "0wR5jVB-WPk_000417-000427",
                                 "0wR5jVB WPk_000417_000427", "_000417_000427", "", None, 17])
def test_malformed_video_ids_name_the_value_and_the_shape(bad):
    with pytest.raises(VideoIdError, match="VATEX shape") as info:
        parse_video_id(bad)
    assert repr(bad) in str(info.value)


def test_a_clip_that_ends_before_it_starts_is_rejected():
    with pytest.raises(VideoIdError, match="ends"):
        parse_video_id("0wR5jVB-WPk_000427_000417")


def test_format_and_parse_round_trip():
    video_id = format_video_id("0wR5jVB-WPk", 417, 427)
    assert video_id == "0wR5jVB-WPk_000417_000427"
    assert parse_video_id(video_id) == ("0wR5jVB-WPk", 417, 427)


def test_record_properties_and_annotation_shape(tmp_path):
    video = tmp_path / "0wR5jVB-WPk_000417_000427.mp4"
    record = ClipRecord("0wR5jVB-WPk_000417_000427", "train", ["a man runs"], ["一个人在跑"], video)
    assert (record.youtube_id, record.start_seconds, record.end_seconds) == ("0wR5jVB-WPk", 417, 427)
    assert not record.has_video
    video.write_bytes(b"\0")
    assert record.has_video
    assert record.to_annotation() == {"videoID": "0wR5jVB-WPk_000417_000427", "enCap": ["a man runs"], "chCap": ["一个人在跑"]}
    assert not ClipRecord("8JW7yCjSyHg_000000_000010", "private_test", []).has_video
