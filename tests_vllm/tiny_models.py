"""Tiny random VLMs of every family the plugin supports, saved with an offline-trained tokenizer.

No hub, no downloads: a config, random weights with some spread (so
log-probabilities differ between prompts), ``save_pretrained``. The language
models have 32-dim heads (vLLM's CPU attention needs at least 32).
"""

from __future__ import annotations

from dataclasses import dataclass

import safetensors.torch
import tokenizers
import torch
import transformers

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIAL = ["<pad>", "<s>", "</s>", "<image>"]
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] in ('image', 'image_url') %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_CORPUS = [
    "describe the picture",
    "what is in the image?",
    "a cat sits on a red mat",
    "the quick brown fox jumps over the lazy dog",
    "how many objects are there",
    "user assistant system hello world USER: ASSISTANT:",
] * 20


@dataclass(frozen=True)
class TinyFamily:
    """One supported family: how to build it, prompt it and size its images.

    ``sizes`` maps "square", "tall", "wide" to ``(width, height)`` in pixels;
    ``cell`` is the pixels per visual token side (Qwen: patch x merge) or
    ``None`` where the processor resizes every image to one grid.
    """

    name: str
    transformers_class: str
    prompt: str
    image: str
    sizes: dict
    cell: int | None = None


_QWEN_PROMPT = "<|im_start|>user\n{images}describe the picture<|im_end|>\n<|im_start|>assistant\n"
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_LLAVA_PROMPT = "USER: {images}describe the picture ASSISTANT:"
_QWEN2_SIZES = {"square": (112, 112), "tall": (84, 224), "wide": (252, 112)}  # 28-pixel cells

FAMILIES = {
    f.name: f
    for f in (
        TinyFamily(
            "qwen2_vl", "Qwen2VLForConditionalGeneration", _QWEN_PROMPT, _QWEN_IMAGE, _QWEN2_SIZES, 28
        ),
        TinyFamily(
            "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", _QWEN_PROMPT, _QWEN_IMAGE, _QWEN2_SIZES, 28
        ),
        TinyFamily(
            "qwen3_vl",
            "Qwen3VLForConditionalGeneration",
            _QWEN_PROMPT,
            _QWEN_IMAGE,
            {"square": (128, 128), "tall": (96, 256), "wide": (288, 128)},
            32,
        ),
        # one 56-pixel CLIP grid of 4 x 4 patches, whatever the image
        TinyFamily(
            "llava",
            "LlavaForConditionalGeneration",
            _LLAVA_PROMPT,
            "<image>\n",
            {"square": (112, 112), "tall": (60, 110), "wide": (110, 60)},
        ),
        # anyres: base 4 x 4, then 2 x 2, 2 x 1 or 1 x 2 crops unpadded to the aspect ratio
        TinyFamily(
            "llava_next",
            "LlavaNextForConditionalGeneration",
            _LLAVA_PROMPT,
            "<image>\n",
            {"square": (112, 112), "tall": (60, 110), "wide": (110, 60)},
        ),
    )
}


def _tokenizer(special: list[str], eos: str, pad: str, template: str) -> transformers.PreTrainedTokenizerFast:
    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(_CORPUS, trainer)
    extra = [t for t in special if t not in (eos, pad)]
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=extra,
        chat_template=template,
    )


def _text(ids: dict, eos: str, pad: str, **extra) -> dict:
    return dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=ids[pad],
        eos_token_id=ids[eos],
        pad_token_id=ids[pad],
        **extra,
    )


def _save(model, processor, directory) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.08)
        newline = getattr(model.model, "image_newline", None)  # LLaVA-NeXT's, uninitialised otherwise
        if newline is not None:
            newline.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def _hub_layout(directory) -> None:
    """Name the CLIP tower's weights as LLaVA checkpoints on the hub do (``vision_tower.vision_model.``).

    transformers 5 saves them without ``vision_model.``; vLLM 0.32 loads only the hub names, and
    transformers reads both.
    """
    path = f"{directory}/model.safetensors"
    weights = safetensors.torch.load_file(path)
    renamed = {
        name.replace("vision_tower.", "vision_tower.vision_model.", 1): w for name, w in weights.items()
    }
    safetensors.torch.save_file(renamed, path, metadata={"format": "pt"})


def _qwen(name: str, directory) -> None:
    tokenizer = _tokenizer(QWEN_SPECIAL, "<|im_end|>", "<|endoftext|>", _QWEN_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}
    text = _text(ids, "<|im_end|>", "<|endoftext|>", rope_parameters=mrope)
    patch = 14
    if name == "qwen2_vl":
        vision = dict(
            depth=2,
            embed_dim=64,
            hidden_size=128,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        )
        config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)
        model, processor_class = (
            transformers.Qwen2VLForConditionalGeneration(config),
            transformers.Qwen2VLProcessor,
        )
        videos = transformers.Qwen2VLVideoProcessor
    elif name == "qwen2_5_vl":
        vision = dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            out_hidden_size=128,
            fullatt_block_indexes=[1],
            in_channels=3,
        )
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
        processor_class, videos = transformers.Qwen2_5_VLProcessor, transformers.Qwen2VLVideoProcessor
    else:  # qwen3_vl: interleaved M-RoPE, deepstack features after both vision layers
        patch = 16
        text["rope_parameters"] = {**mrope, "mrope_section": [6, 5, 5], "mrope_interleaved": True}
        text["head_dim"] = 32
        vision = dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=128,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
            in_channels=3,
        )
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
        model = transformers.Qwen3VLForConditionalGeneration(config)
        processor_class, videos = transformers.Qwen3VLProcessor, transformers.Qwen3VLVideoProcessor
    cell = patch * 2
    # 4 x 4 to 16 x 16 merged tokens per image
    image_processor = transformers.Qwen2VLImageProcessor(
        min_pixels=cell * cell * 4,
        max_pixels=cell * cell * 256,
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=videos(patch_size=patch, merge_size=2, temporal_patch_size=2),
        chat_template=_QWEN_TEMPLATE,
    )
    _save(model.eval(), processor, directory)


def _llava(name: str, directory) -> None:
    tokenizer = _tokenizer(LLAVA_SPECIAL, "</s>", "<pad>", _LLAVA_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    text = dict(model_type="llama", **_text(ids, "</s>", "<pad>"))
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    common = dict(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<image>"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=ids["<pad>"],
    )
    sizes = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    kwargs = dict(
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_TEMPLATE,
    )
    if name == "llava":
        model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**common))
        processor = transformers.LlavaProcessor(
            image_processor=transformers.CLIPImageProcessor(**sizes), **kwargs
        )
    else:
        pinpoints = [[56, 112], [112, 56], [112, 112]]
        config = transformers.LlavaNextConfig(image_grid_pinpoints=pinpoints, **common)
        model = transformers.LlavaNextForConditionalGeneration(config)
        images = transformers.LlavaNextImageProcessor(image_grid_pinpoints=pinpoints, **sizes)
        processor = transformers.LlavaNextProcessor(image_processor=images, **kwargs)
    _save(model.eval(), processor, directory)
    _hub_layout(directory)


def save_tiny(name: str, directory, seed: int = 0) -> None:
    """Write the tiny model of family ``name`` (a key of :data:`FAMILIES`) and its processor.

    Seeded before the model is built: its own initialisation draws some weights (CLIP's class
    embedding), the same on every run.
    """
    torch.manual_seed(seed)
    (_qwen if name.startswith("qwen") else _llava)(name, directory)
