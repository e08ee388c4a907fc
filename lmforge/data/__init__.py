"""Text in, token tensors out: corpora, cleaning, token shards and batches."""

# The label of a position that is not scored (F.cross_entropy's ignore_index): an unmasked position
# for masked LM, a word's later pieces, specials and padding for tagging. Data makes the labels;
# objectives, tasks and train read them from here.
IGNORE = -100
