"""Text in, token tensors out: corpora, cleaning, token shards and batches."""
