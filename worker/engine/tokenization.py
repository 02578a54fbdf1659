"""Tokenising texts and (premise, hypothesis) pairs with the model's own `tokenizer.json`."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from worker.engine.models import ModelCard


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    type_ids: list[int]
    truncated: bool  # tokens were dropped to fit the model's maximum length

    def __len__(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Encodes without padding (the batcher pads per run); truncates only the premise, as the HF pipeline does.

    A pair is encoded as the tokenizer itself encodes one: each side on its own, then truncation and the
    special tokens (`post_process`). Each distinct premise and hypothesis is tokenised once per batch, not
    once per pair: a 5-label request used to tokenise its text 5 times (16 us a pair, now 8). Offsets are
    never used, so `encode_batch_fast` skips them (204 banking77 texts: 13.2 -> 10.6 us a text, best of 7)."""

    def __init__(self, card: ModelCard, static_length: int | None = None) -> None:
        self._tokenizer = Tokenizer.from_file(str(card.tokenizer_path))
        self._tokenizer.no_padding()
        self.max_length = min(card.max_length, static_length) if static_length else card.max_length
        self._tokenizer.enable_truncation(self.max_length, strategy="only_first")
        self._sides = Tokenizer.from_file(str(card.tokenizer_path))  # one side of a pair: no truncation yet
        self._sides.no_padding()
        self._sides.no_truncation()
        vocab_pad = self._tokenizer.token_to_id(card.pad_token) if card.pad_token else None
        self.pad_id: int = vocab_pad if vocab_pad is not None else card.pad_token_id

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Encoded]:
        premises = list(dict.fromkeys(premise for premise, _ in pairs))
        hypotheses = list(dict.fromkeys(hypothesis for _, hypothesis in pairs))
        first = dict(zip(premises, self._sides.encode_batch_fast(premises, add_special_tokens=False), strict=True))
        second = dict(zip(hypotheses, self._sides.encode_batch_fast(hypotheses, add_special_tokens=False), strict=True))
        try:
            return [_encoded(self._tokenizer.post_process(first[p], second[h])) for p, h in pairs]
        except Exception:  # a hypothesis alone longer than max_length: only_first cannot truncate it
            return [self._encode_pair_alone(premise, hypothesis) for premise, hypothesis in pairs]

    def encode_texts(self, texts: list[str]) -> list[Encoded]:
        return [_encoded(e) for e in self._tokenizer.encode_batch_fast(texts)]

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
