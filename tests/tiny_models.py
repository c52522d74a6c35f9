"""Tiny random models built offline, for tests that need the real transformers code path.

``build_tiny_llama`` writes a two-layer Llama with a word-level tokenizer and a chat
template into a directory, exactly as ``save_pretrained`` lays out a downloaded model,
so loading it exercises the same ``from_pretrained`` calls as a real one. Its output is
random words, produced in milliseconds.

``converted_default_model`` runs the real one-time conversion of the default model once
per test session and hands every caller the same directory.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

_VOCABULARY = (
    "the a an and or but if then when where who what why how is are was were be been "
    "cat dog bird fish tree river mountain city road house car train boat plane sun moon "
    "star sky rain snow wind fire water earth stone gold red blue green yellow black white "
    "big small fast slow old new good bad hot cold one two three four five six seven eight "
    "nine ten hello world paris france capital question answer"
)
WORDS = _VOCABULARY.split()
PUNCTUATION = [".", ",", "?", "!", ":"]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)
CONTEXT_LENGTH = 1024


def build_tiny_llama(path: Path) -> Path:
    """Save a tiny random Llama and its tokenizer under ``path``; return ``path``.

    The end-of-text token is made practically unreachable (its output row is zero while
    the others are large), so generations run to ``max_tokens`` unless stopped.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + PUNCTUATION + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    generator = torch.Generator().manual_seed(1234)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=generator))
        model.lm_head.weight[vocab["</s>"]] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass(frozen=True)
class Converted:
    """The outcome of converting the default model: where, and how it went."""

    path: Path
    data_dir: Path
    progress: list[tuple[str, float | None]]
    seconds: float


_converted: list[Converted] = []
_converting = threading.Lock()


def converted_default_model(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """The default model converted from its bundled GGUF, once per test session.

    Runs ``resolve`` offline against an empty Hugging Face cache, so it takes the GGUF
    path; later calls return the first result without converting again.
    """
    from node.worker.models import DEFAULT_MODEL, resolve

    with _converting:
        if not _converted:
            base = tmp_path_factory.mktemp("default-model")
            events: list[tuple[str, float | None]] = []
            with pytest.MonkeyPatch.context() as env:
                env.setenv("HF_HUB_OFFLINE", "1")
                env.setenv("HF_HUB_CACHE", str(base / "empty-hf-cache"))
                started = time.monotonic()
                path = resolve(DEFAULT_MODEL, base / "data", lambda m, f: events.append((m, f)))
                took = time.monotonic() - started
            _converted.append(Converted(path, base / "data", events, took))
        return _converted[0]


def build_tiny_sd(path: Path) -> Path:
    """Save a tiny random Stable Diffusion pipeline under ``path``; return ``path``.

    Every part is the real class at a toy size: a UNet with two blocks, a VAE that
    scales by 8 like the real one, a one-layer CLIP text encoder and a CLIP tokenizer
    whose BPE vocabulary is just the letters (written here, so nothing is downloaded).
    64x64 images take about 0.1 s in two steps.
    """
    import json
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters]:
        vocab[token] = len(vocab)
    with tempfile.TemporaryDirectory() as sources:
        vocab_file, merges_file = Path(sources, "vocab.json"), Path(sources, "merges.txt")
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)

    torch.manual_seed(0)  # the random weights, hence the images, are the same every run
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(  # type: ignore[no-untyped-call]
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)  # type: ignore[attr-defined]
    return path
