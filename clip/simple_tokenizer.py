"""OpenAI's ``clip.simple_tokenizer`` module: the byte-level BPE tokenizer, from open_clip (same vocabulary file,
same cleaning: ftfy, HTML unescape, whitespace collapse, lower case). CoOp-family trainer files use
``SimpleTokenizer().encode(classname)`` to count a class name's tokens."""
from open_clip.tokenizer import SimpleTokenizer, basic_clean, bytes_to_unicode, default_bpe, get_pairs, whitespace_clean

__all__ = ["SimpleTokenizer", "default_bpe", "bytes_to_unicode", "get_pairs", "basic_clean", "whitespace_clean"]
