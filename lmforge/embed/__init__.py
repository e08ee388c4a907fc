"""Word embeddings: skip-gram with negative sampling (word2vec.py), or a model's input embeddings;
nearest neighbours and analogies (vectors.py); a 2-D picture of chosen words (plot.py)."""

from lmforge.embed.vectors import WordVectors, corpus_words, from_model
from lmforge.embed.word2vec import Word2VecConfig, train_word2vec

__all__ = ["Word2VecConfig", "WordVectors", "corpus_words", "from_model", "train_word2vec"]
