"""GPT-2 BPE through tiktoken, optionally cut to the first N ranks.

`r50k_base` has the same ranks as `gpt2` and lives in a single file, so one
cached file is enough offline. BPE merges are rank-ordered: a token of rank r
is built from tokens of lower rank, so the first N ranks (bytes included) are
a valid BPE on their own. A cut vocabulary of size V keeps ranks 0..V-2 and
puts `<|endoftext|>` at id V-1.
"""

from __future__ import annotations

import functools
import os

from noisefloor.config import GPT2_VOCAB_SIZE
from noisefloor.errors import UserError

ENCODING_NAME = "r50k_base"
END_OF_TEXT = "<|endoftext|>"


@functools.lru_cache(maxsize=1)
def _base_encoding():
    import tiktoken  # only when text is tokenised: a run on a cached or token-file corpus never loads it

    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as exc:  # network errors, bad cache file: all mean "no BPE file"
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "(TIKTOKEN_CACHE_DIR unset)")
        raise UserError(
            f"cannot load the GPT-2 BPE file ({ENCODING_NAME}) from {cache} or the network "
            f"({type(exc).__name__}); put the cached file in a folder and set TIKTOKEN_CACHE_DIR to it"
        ) from None


@functools.lru_cache(maxsize=8)
def get_tokenizer(vocab_size: int = GPT2_VOCAB_SIZE):
    """A tiktoken Encoding with `vocab_size` ids, the last one being <|endoftext|>."""
    base = _base_encoding()
    if vocab_size == base.n_vocab:
        return base
    import tiktoken  # as in _base_encoding

    kept = vocab_size - 1
    ranks = {token: rank for token, rank in base._mergeable_ranks.items() if rank < kept}
    return tiktoken.Encoding(
        name=f"{ENCODING_NAME}-first{kept}",
        pat_str=base._pat_str,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: kept},
    )


def tokenizer_id(vocab_size: int) -> str:
    """Names the tokenizer in manifests and cache keys."""
    return ENCODING_NAME if vocab_size == GPT2_VOCAB_SIZE else f"{ENCODING_NAME}-first{vocab_size - 1}"
