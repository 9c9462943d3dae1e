"""05: text targets (phrases, sentence embeddings), the caption dataset, the multi-loss objective,
the Java-free CIDEr-D that picks the best checkpoint, and the trainer."""
