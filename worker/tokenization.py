"""Tokenising texts and (premise, hypothesis) pairs with the model's own `tokenizer.json`."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from worker.models import ModelCard


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    type_ids: list[int]
    truncated: bool  # tokens were dropped to fit the model's maximum length

    def __len__(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Encodes without padding (the batcher pads per run); truncates only the premise, as the HF pipeline does."""

    def __init__(self, card: ModelCard, static_length: int | None = None) -> None:
        self._tokenizer = Tokenizer.from_file(str(card.tokenizer_path))
        self._tokenizer.no_padding()
        self.max_length = min(card.max_length, static_length) if static_length else card.max_length
        self._tokenizer.enable_truncation(self.max_length, strategy="only_first")
        vocab_pad = self._tokenizer.token_to_id(card.pad_token) if card.pad_token else None
        self.pad_id: int = vocab_pad if vocab_pad is not None else card.pad_token_id

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Encoded]:
        try:
            return [_encoded(e) for e in self._tokenizer.encode_batch(pairs)]
        except Exception:  # a hypothesis alone longer than max_length: only_first cannot truncate it
            return [self._encode_pair_alone(premise, hypothesis) for premise, hypothesis in pairs]

    def encode_texts(self, texts: list[str]) -> list[Encoded]:
        return [_encoded(e) for e in self._tokenizer.encode_batch(texts)]

    def _encode_pair_alone(self, premise: str, hypothesis: str) -> Encoded:
        try:
            return _encoded(self._tokenizer.encode(premise, hypothesis))
        except Exception:
            self._tokenizer.enable_truncation(self.max_length, strategy="longest_first")
            try:
                return _encoded(self._tokenizer.encode(premise, hypothesis))
            finally:
                self._tokenizer.enable_truncation(self.max_length, strategy="only_first")


def _encoded(encoding: Encoding) -> Encoded:
    return Encoded(list(encoding.ids), list(encoding.type_ids), truncated=bool(encoding.overflowing))
