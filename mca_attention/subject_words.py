"""Generation: where the subject word(s) sit in the target prompt, read with the model's own tokenizer.

The tokenizer is the CLIP object of ComfyUI (``clip.tokenize``); the family's ``TextFacts.encoder_key``
names the tokenizer output the model attends to. The tokens before the text (CLIP's start token, none on T5)
and the end token are read from the tokenizer itself (the empty prompt), so no family's rule is written here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cross_attention_mask import find_token_positions
from .text import TextFacts

CLIP_TEXT = TextFacts()  # the UNets' rule: CLIP's tokens as they are (frozen)

MAX_TEXT_TOKENS = 75  # one 77-token chunk: start token, 75 text tokens, end token


@dataclass(frozen=True)
class SubjectWords:
    """What the user said of the subject in generation: the target prompt's text and the word(s) or indices."""

    clip: object | None
    target_text: str = ""
    words: str = ""  # comma-separated
    token_indices: str = ""  # comma-separated, 1 = the first text token

    def tokens(self, text: TextFacts) -> list[int]:
        """The subject's token positions in the target prompt as the model reads it (see ``subject_tokens``)."""
        return subject_tokens(self.clip, self.target_text, self.words, self.token_indices, text)

    def encoded_target(self):
        """The target prompt as CLIP Text Encode makes it (None without clip or text)."""
        return encoded_text(self.clip, self.target_text) if self.clip is not None and self.target_text.strip() else None


def _token_ids(clip, text: str, encoder_key: str | None) -> list[int]:
    """The token ids of ``text``'s first chunk, from the text encoder the model attends to.

    ``encoder_key`` names it in ComfyUI's tokenizer output (Flux: ``t5xxl``); None takes the first one
    (the CLIP of a UNet model).
    """
    tokens = clip.tokenize(text)
    chunks = tokens[encoder_key] if encoder_key in tokens else next(iter(tokens.values()))
    return [int(token) for token, *_ in chunks[0]]


def _start_tokens(clip, encoder_key: str | None) -> int:
    """How many tokens come before the text (CLIP: its start token; T5: none), read from the empty prompt."""
    empty, one = _token_ids(clip, "", encoder_key), _token_ids(clip, "a", encoder_key)
    start = 0
    while start < min(len(empty), len(one)) - 1 and one[start] == empty[start]:
        start += 1
    return start


def _text_ids(clip, text: str, encoder_key: str | None) -> list[int]:
    """The text's own tokens: without the start token(s), up to the end token (the empty prompt's next one)."""
    start = _start_tokens(clip, encoder_key)
    end = _token_ids(clip, "", encoder_key)[start]
    body = _token_ids(clip, text, encoder_key)[start:]
    return body[:body.index(end)] if end in body else body


def index_list(token_indices: str) -> list[int]:
    """The positions in ``token_indices`` (comma-separated, 1-based); refused unless whole numbers from 1. Needs
    no model: the node checks it when the prompt is queued."""
    try:
        indices = [int(part) for part in token_indices.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"token_indices must be whole numbers separated by commas, got '{token_indices}'") from None
    wrong = [i for i in indices if i < 1]
    if wrong:
        raise ValueError(f"token_indices {wrong} are outside 1..: 1 = the first word's first token (0 is the start "
                         f"token).")
    return indices


def parse_indices(token_indices: str, text_tokens: int | None = None) -> list[int]:
    """The 1-based token positions in ``token_indices``; refused when not whole numbers in 1..the prompt's tokens."""
    indices = index_list(token_indices)
    last = MAX_TEXT_TOKENS if text_tokens is None else text_tokens
    wrong = [i for i in indices if i > last]
    if wrong:
        where = ("the target prompt has" if text_tokens is not None else "a prompt has at most")
        raise ValueError(f"token_indices {wrong} are outside 1..{last}: {where} {last} text tokens "
                         f"(1 = the first word's first token; 0 is the start token and later ones are padding).")
    return sorted(set(indices))


def subject_tokens(clip, target_text: str, subject_words: str, token_indices: str,
                   text: TextFacts = CLIP_TEXT) -> list[int]:
    """Token positions of the subject word(s) in the target prompt (generation mode), as the model reads it.

    Positions count from the tokenizer's first token (CLIP's start token is kept); where the encoder cuts the
    tokens before the text (``text.cuts_prefix``: a chat template's prefix, Qwen-Image) from the first text token;
    where the model pads prompts before their tokens (``text.padded_left_to``: Flux.2) from the prompt's end, as
    negative positions, which index the padded sequence whatever its length.
    """
    key = text.encoder_key
    has_text = clip is not None and bool(target_text.strip())
    if text.padded_left_to and not has_text:
        raise ValueError("on this model the subject's tokens are counted from the end of the target prompt: connect "
                         "the clip input and type the target prompt's text in target_text too.")
    if token_indices.strip():
        if clip is None and key is not None:
            raise ValueError("token_indices on this model need the clip input, to place them in its "
                             f"{key} tokens: connect the CLIP that encodes the target prompt.")
        indices = parse_indices(token_indices, len(_text_ids(clip, target_text, key)) if has_text else None)
        if clip is None:
            return indices  # a UNet's CLIP without the tokenizer at hand: one start token, so index 1 is position 1
        start = 0 if text.cuts_prefix else _start_tokens(clip, key)
        positions = [index - 1 + start for index in indices]  # index 1 = the first text token
    else:
        if not has_text or not subject_words.strip():
            raise ValueError("generation without an edit_mask needs clip, target_text and subject_words "
                             "(or token_indices), or connect a layout mask as edit_mask.")
        prompt = _token_ids(clip, target_text, key)
        found_all: list[int] = []
        for word in (w.strip() for w in subject_words.split(",") if w.strip()):
            # byte-level BPE (Qwen) spells a word inside a sentence with its leading space: " dog", not "dog"
            found = (find_token_positions(prompt, _text_ids(clip, word, key))
                     or find_token_positions(prompt, _text_ids(clip, " " + word, key)))
            if not found:
                raise ValueError(f"'{word}' does not occur in the target text '{target_text}'")
            found_all.extend(found)
        cut = _start_tokens(clip, key) if text.cuts_prefix else 0
        positions = sorted({position - cut for position in found_all})
    if text.padded_left_to:
        length = len(_token_ids(clip, target_text, key))
        return [position - length for position in positions]
    return positions


def encoded_text(clip, text: str):
    """The prompt tensor CLIP Text Encode would make of ``text`` (for the sampler's same-prompt check)."""
    return clip.encode_from_tokens(clip.tokenize(text)).detach().cpu()
