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
from typing import Any

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


# --- speech and pictures -------------------------------------------------------------------
# Each builder saves a random model of the real class at a toy size, with its real
# tokenizer or processor, as ``save_pretrained`` lays out a downloaded one.

_LETTERS = list(" abcdefghijklmnopqrstuvwxyz'.,?!-")
_PROSE = "the quick brown fox jumps over the lazy dog. hello world, is this a test? yes!"
WHISPER_LANGUAGES = ("en", "fr", "de", "es")
_VISION_VOCABULARY = "the a cat dog red blue image picture what is in this hello photo of"
VISION_WORDS = _VISION_VOCABULARY.split()
_SMALL_VOCODER: dict[str, Any] = {
    "upsample_initial_channel": 16,
    "upsample_rates": [4, 4],
    "upsample_kernel_sizes": [8, 8],
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3]],
}


def transformers_any() -> Any:
    """transformers, its classes untyped: these builders call them with toy settings."""
    import transformers

    return transformers


def build_tiny_vits(path: Path, speakers: int = 1) -> Path:
    """Save a tiny random VITS (MMS-TTS's architecture) with a character tokenizer."""
    import json

    import torch

    hf = transformers_any()

    path.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(["<pad>", *_LETTERS])}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = hf.VitsTokenizer(
        str(path / "vocab.json"), pad_token="<pad>", unk_token="<pad>", phonemize=False
    )
    config = hf.VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=2,
        ffn_dim=32,
        flow_size=8,
        spectrogram_bins=17,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=1,
        num_speakers=speakers,
        speaker_embedding_size=8 if speakers > 1 else 0,
        sampling_rate=16_000,
        **_SMALL_VOCODER,
    )
    torch.manual_seed(0)
    hf.VitsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_speecht5(path: Path, voices: tuple[str, ...] = ("alice", "bob")) -> Path:
    """Save a tiny random SpeechT5 text-to-speech model with its vocoder (``vocoder/``)
    and named voices (``speakers.safetensors``), as a node expects to find them."""
    import io

    import sentencepiece
    import torch
    from safetensors.torch import save_file

    hf = transformers_any()

    path.mkdir(parents=True, exist_ok=True)
    model_file = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([_PROSE] * 10),
        model_writer=model_file,
        model_type="char",
        vocab_size=34,
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    (path / "spm_char.model").write_bytes(model_file.getvalue())
    tokenizer = hf.SpeechT5Tokenizer(str(path / "spm_char.model"))
    processor = hf.SpeechT5Processor(
        feature_extractor=hf.SpeechT5FeatureExtractor(), tokenizer=tokenizer
    )
    config = hf.SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=1,
        speaker_embedding_dim=8,
        reduction_factor=2,
        max_speech_positions=600,
        max_text_positions=200,
    )
    torch.manual_seed(0)
    hf.SpeechT5ForTextToSpeech(config).save_pretrained(path)
    processor.save_pretrained(path)
    hf.SpeechT5HifiGan(hf.SpeechT5HifiGanConfig(model_in_dim=80, **_SMALL_VOCODER)).save_pretrained(
        path / "vocoder"
    )
    save_file({v: torch.randn(8) for v in voices}, str(path / "speakers.safetensors"))
    return path


def build_tiny_whisper(path: Path) -> Path:
    """Save a tiny random multilingual Whisper: a byte-level tokenizer with Whisper's
    special tokens (a few languages) and every timestamp token, and a generation config
    that knows them, as a released Whisper's does."""
    import torch
    from tokenizers import AddedToken, pre_tokenizers

    hf = transformers_any()

    vocab = {t: i for i, t in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    languages = [f"<|{code}|>" for code in WHISPER_LANGUAGES]
    specials = [
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer = hf.WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=specials)
    tokenizer.add_tokens(
        [AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False, special=False) for i in range(1501)]
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *specials]}
    end = ids["<|endoftext|>"]
    config = hf.WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        # A short decoder: a window is written in at most 32 tokens, so tests stay fast.
        max_target_positions=64,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=[end],
        suppress_tokens=[],
    )
    generation = hf.GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        begin_suppress_tokens=[end],
        suppress_tokens=[],
        max_length=config.max_target_positions,
    )
    generation.lang_to_id = {language: ids[language] for language in languages}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    generation.is_multilingual = True
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.prev_sot_token_id = ids["<|startofprev|>"]
    generation.max_initial_timestamp_index = 50
    torch.manual_seed(0)
    model = hf.WhisperForConditionalGeneration(config)
    model.generation_config = generation
    model.save_pretrained(path)
    hf.WhisperProcessor(
        feature_extractor=hf.WhisperFeatureExtractor(), tokenizer=tokenizer
    ).save_pretrained(path)
    return path


def _vision_tokenizer(extra: dict[str, str] | None = None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = transformers_any()
    special = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocab = {t: i for i, t in enumerate([*special, ":", "?", ".", *VISION_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return hf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=extra or {},
    )


VISION_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : "
    "{% if m['content'] is string %}{{ m['content'] }} {% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
    "{% endfor %}{% endif %}</s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)


def build_tiny_llava(path: Path) -> Path:
    """Save a tiny random LLaVA (a CLIP vision tower, a Llama) with its processor and a
    chat template that places pictures."""
    import torch

    hf = transformers_any()

    tokenizer = _vision_tokenizer({"image_token": "<image>"})
    processor = hf.LlavaProcessor(
        image_processor=hf.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=VISION_TEMPLATE,
        num_additional_image_tokens=1,
    )
    config = hf.LlavaConfig(
        vision_config=hf.CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        ),
        text_config=hf.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    model = hf.LlavaForConditionalGeneration(config)
    with torch.no_grad():  # the end of text practically unreachable: answers run to max_tokens
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape))
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_blip(path: Path) -> Path:
    """Save a tiny random BLIP captioning model with its processor (no chat template)."""
    import torch

    hf = transformers_any()

    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VISION_WORDS]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = hf.BlipProcessor(
        image_processor=hf.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=hf.BertTokenizer(str(path / "vocab.txt")),
    )
    text = hf.BlipTextConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        encoder_hidden_size=16,
        max_position_embeddings=64,
        bos_token_id=2,
        sep_token_id=3,
        pad_token_id=0,
    )
    vision = hf.BlipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    config = hf.BlipConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    hf.BlipForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


# A Hermes-style template (as Qwen's): tools listed in a system turn, calls in <tool_call>
# tags, a tool's answer in its own turn. The generation prompt ends in ":" after a user
# turn and in "," after a tool's answer, which is all the scripted model below looks at.
TOOL_TEMPLATE = (
    "{% if tools %}<s> system : tools {% for t in tools %}{{ t['function']['name'] }} "
    "{% endfor %}<tool_call> </s> {% endif %}"
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] or '' }} "
    "{% for c in m.tool_calls or [] %}<tool_call> {{ c['function']['name'] }} </tool_call> "
    "{% endfor %}</s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant "
    "{% if messages[-1]['role'] == 'tool' %}, {% else %}: {% endif %}{% endif %}"
)
# What the scripted model says: after a user's turn it calls get_weather for Paris; after
# the tool's answer it answers in words.
SCRIPTED_CALL = [
    "<tool_call>", '{"name":', '"get_weather",', '"arguments":', '{"city":', '"paris"}}',
    "</tool_call>",
]  # fmt: skip
SCRIPTED_ANSWER = ["the", "weather", "is", "sunny", "."]


def build_scripted_llama(path: Path) -> Path:
    """Save a Llama whose weights make it follow a script: its next token depends only on
    its last one (each token's embedding is one-hot, every layer adds nothing, and the
    output head maps each token to its successor), so after ":" it writes
    ``SCRIPTED_CALL`` and after "," ``SCRIPTED_ANSWER``, each followed by end of text."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["system", "user", "assistant", "tool", "tools", "get_weather", ":", ","]
    tokens = SPECIAL + words + SCRIPTED_CALL + SCRIPTED_ANSWER
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = TOOL_TEMPLATE
    size = 64  # hidden width: at least the vocabulary, for one-hot embeddings
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=size,
        intermediate_size=size,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=CONTEXT_LENGTH,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    successor = {":": SCRIPTED_CALL[0], ",": SCRIPTED_ANSWER[0]}
    for script in (SCRIPTED_CALL, SCRIPTED_ANSWER):
        successor |= dict(zip(script, [*script[1:], "</s>"], strict=True))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.zero_()
        model.model.embed_tokens.weight[:, :] = torch.eye(len(vocab), size)
        for token, after in successor.items():
            model.lm_head.weight[vocab[after], vocab[token]] = 1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_bpe_llama(path: Path) -> Path:
    """Save a tiny random Llama with a byte-level BPE tokenizer (any text, JSON included,
    can be written with it) and ``TOOL_TEMPLATE``; return ``path``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        " ".join(WORDS),
        '{"city": "paris", "days": 3, "sunny": true, "tags": ["a", "b"]} null false',
        "<s> </s> <tool_call> </tool_call> 0123456789 : , . [ ] { }",
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=SPECIAL)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = TOOL_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(4321)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
