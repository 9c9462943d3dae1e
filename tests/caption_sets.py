"""A small caption set (four clips, three references each) shared by the scorer tests."""

REFERENCES = {
    "clip_a_000000_000010": ["A man plays a guitar on stage.", "a man is playing the guitar", "someone strums a guitar"],
    "clip_b_000000_000010": ["A dog runs in the park.", "the dog is running on grass", "a brown dog running"],
    "clip_c_000000_000010": ["A woman cooks food in a kitchen.", "someone is cooking", "a lady prepares a meal"],
    "clip_d_000000_000010": ["Two kids play football.", "children kick a ball", "kids playing soccer outside"],
}
PREDICTIONS = {
    "clip_a_000000_000010": "a man is playing a guitar",
    "clip_b_000000_000010": "a dog is running in the park",
    "clip_c_000000_000010": "a man is cooking",
    "clip_d_000000_000010": "a man plays football",
}
