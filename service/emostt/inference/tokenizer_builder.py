"""Write a SentencePiece model from an explicit piece list (no training corpus needed).

Used for generated model dirs: the vocabulary holds every SenseVoice rich token, placed at
the same offsets from the end of the vocabulary as in SenseVoiceSmall's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentencepiece import sentencepiece_model_pb2

from emostt.inference.rich_tokens import EMOTION_TOKENS, EVENT_TOKENS, LANGUAGE_TOKENS, TEXT_NORM_TOKENS

CONTROL_PIECES = ("<unk>", "<s>", "</s>")
sp_pb2: Any = sentencepiece_model_pb2  # generated protobuf module: no type stubs

RICH_BLOCK_SIZE = 171  # SenseVoiceSmall: ids 24884..25054

# Offsets inside the rich block, mirroring the SenseVoiceSmall vocabulary where known.
_RICH_OFFSETS: dict[str, int] = {
    LANGUAGE_TOKENS["zh"]: 0,
    LANGUAGE_TOKENS["en"]: 1,
    LANGUAGE_TOKENS["yue"]: 4,
    LANGUAGE_TOKENS["ja"]: 8,
    LANGUAGE_TOKENS["ko"]: 12,
    LANGUAGE_TOKENS["nospeech"]: 108,
    **{piece: 109 + i for i, piece in enumerate(list(EVENT_TOKENS.values())[:8])},
    **{piece: 117 + i for i, piece in enumerate(list(EMOTION_TOKENS.values())[:7])},
    EMOTION_TOKENS["unknown"]: 125,
    **{piece: 126 + i for i, piece in enumerate(list(EVENT_TOKENS.values())[8:])},
    TEXT_NORM_TOKENS["withitn"]: 132,
    TEXT_NORM_TOKENS["woitn"]: 133,
}


def rich_block() -> list[str]:
    block = [f"<|unused_{i}|>" for i in range(RICH_BLOCK_SIZE)]
    for piece, offset in _RICH_OFFSETS.items():
        block[offset] = piece
    return block


def default_text_pieces(count: int) -> list[str]:
    """Latin letters and word starts, digits, then CJK, kana and hangul characters, ``count`` in all."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["▁", *(f"▁{c}" for c in letters), *letters, "'", *(str(d) for d in range(10))]
    for lo, hi in ((0x4E00, 0x9FFF), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xD7A3)):
        if len(pieces) >= count:
            break
        pieces.extend(chr(c) for c in range(lo, hi + 1))
    if len(pieces) < count:
        raise ValueError(f"cannot make {count} distinct text pieces")
    return pieces[:count]


def write_sentencepiece(path: Path, text_pieces: Sequence[str]) -> list[str]:
    """Write the model; returns the full piece list (index = token id)."""
    pieces = [*CONTROL_PIECES, *text_pieces, *rich_block()]
    if len(set(pieces)) != len(pieces):
        raise ValueError("text pieces overlap the control or rich tokens")
    proto = sp_pb2.ModelProto()
    spec = proto.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(pieces)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    spec.byte_fallback = False
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = True
    norm.escape_whitespaces = True
    kinds = sp_pb2.ModelProto.SentencePiece
    for i, piece in enumerate(pieces):
        item = proto.pieces.add()
        item.piece = piece
        # Equal scores make the unigram segmenter prefer the fewest (longest) pieces.
        item.score = -1.0
        if i == 0:
            item.type = kinds.UNKNOWN
        elif i < len(CONTROL_PIECES):
            item.type = kinds.CONTROL
        elif piece.startswith("<|"):
            item.type = kinds.USER_DEFINED
        else:
            item.type = kinds.NORMAL
    path.write_bytes(proto.SerializeToString())
    return pieces
