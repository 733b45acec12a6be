"""Tiny random mlx-vlm models built from configs (no hub, no downloads), one builder per family.

Each builder returns ``(model, input_ids, pixel_values, extra_kwargs)`` for one
prompt ``text + N image tokens + text`` (LLaVA-NeXT: one placeholder that the
model expands). :data:`BUILDERS` maps ``model_type`` to its builder; a family
the installed mlx-vlm lacks is absent from :func:`available`.
"""

from __future__ import annotations

import importlib

import mlx.core as mx

N = 16
IMAGE = 99  # image placeholder id of the non-Qwen families
QWEN_IMAGE, QWEN_START = 120, 122


def _module(name):
    return importlib.import_module(f"mlx_vlm.models.{name}")


def _prompt(image, before=(2, 5, 6), after=(7, 8, 9), n=N):
    return mx.array([[*before] + [image] * n + [*after]])


def llava():
    m = _module("llava")
    text = m.TextConfig(
        model_type="llama",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    vision = m.VisionConfig(
        model_type="clip_vision_model",
        num_hidden_layers=3,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="llava",
            image_token_index=IMAGE,
            vocab_size=100,
        )
    )
    return model, _prompt(IMAGE), mx.random.normal((1, 3, 16, 16)), {}


def llava_next():
    m = _module("llava_next")
    text = m.TextConfig(
        model_type="llama",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    vision = m.VisionConfig(
        model_type="clip_vision_model",
        num_hidden_layers=3,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="llava_next",
            image_token_index=IMAGE,
            vocab_size=100,
        )
    )
    # one placeholder, expanded by the model into the base crop's 16 patches
    pixels = mx.random.normal((1, 2, 3, 16, 16))
    return model, _prompt(IMAGE, n=1), pixels, {"image_sizes": mx.array([[16, 16]])}


def llava_onevision(pinpoints=((16, 16),), size=(16, 16)):
    """One ``size`` (height, width) image; its tiles over ``pinpoints``, packed to at most one tile."""
    m = _module("llava_onevision")
    text = m.TextConfig(
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    vision = m.VisionConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=IMAGE,
            vocab_size=128,
            image_grid_pinpoints=[list(p) for p in pinpoints],
            vision_aspect_ratio="anyres_max_1",
        )
    )
    sizes = mx.array([list(size)])
    tiles = m.llava_onevision.image_size_to_num_patches(list(size), model.config.image_grid_pinpoints, 16)
    pixels = mx.random.normal((1, tiles, 3, 16, 16))
    n = model.get_image_features(pixels, sizes).shape[0]  # AnyRes packing: base + tile + newlines
    return model, _prompt(IMAGE, n=n), pixels, {"image_sizes": sizes}


def _qwen_configs(m, model_type, **vision):
    v = m.VisionConfig(
        depth=2,
        hidden_size=32,
        num_heads=4,
        patch_size=2,
        spatial_patch_size=2,
        spatial_merge_size=2,
        temporal_patch_size=2,
        **vision,
    )
    return v


def qwen2_vl():
    m = _module("qwen2_vl")
    vision = _qwen_configs(m, "qwen2_vl", embed_dim=32)
    text = m.TextConfig(
        model_type="qwen2_vl",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=128,
        rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="qwen2_vl",
            image_token_id=QWEN_IMAGE,
            video_token_id=121,
            vision_start_token_id=QWEN_START,
            vocab_size=128,
        )
    )
    return _qwen_inputs(model)


def qwen2_5_vl():
    m = _module("qwen2_5_vl")
    vision = _qwen_configs(
        m, "qwen2_5_vl", out_hidden_size=32, intermediate_size=64, window_size=8, fullatt_block_indexes=[1]
    )
    text = m.TextConfig(
        model_type="qwen2_5_vl",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=128,
        rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="qwen2_5_vl",
            image_token_id=QWEN_IMAGE,
            video_token_id=121,
            vision_start_token_id=QWEN_START,
            vocab_size=128,
        )
    )
    return _qwen_inputs(model)


def qwen3_vl():
    m = _module("qwen3_vl")
    vision = _qwen_configs(
        m,
        "qwen3_vl",
        out_hidden_size=32,
        intermediate_size=64,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    )
    text = m.TextConfig(
        model_type="qwen3_vl",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        rms_norm_eps=1e-6,
        vocab_size=128,
        num_key_value_heads=2,
        head_dim=8,
        rope_theta=10000.0,
        max_position_embeddings=512,
        rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="qwen3_vl",
            image_token_id=QWEN_IMAGE,
            video_token_id=121,
            vision_start_token_id=QWEN_START,
            vocab_size=128,
        )
    )
    return _qwen_inputs(model)


def _qwen_inputs(model):
    ids = _prompt(QWEN_IMAGE, before=(3, 4, QWEN_START), after=(123, 5, 6, 7))
    return model, ids, mx.random.normal((64, 3 * 2 * 2 * 2)), {"image_grid_thw": mx.array([[1, 8, 8]])}


def gemma3(layers=2):
    """Sliding-window layers alternate with global ones (window 8, shorter than the prompts)."""
    m = _module("gemma3")
    text = m.TextConfig(
        model_type="gemma3_text",
        hidden_size=32,
        num_hidden_layers=layers,
        intermediate_size=64,
        num_attention_heads=4,
        head_dim=8,
        num_key_value_heads=2,
        vocab_size=128,
        query_pre_attn_scalar=8,
        sliding_window=8,
        mm_tokens_per_image=N,
        sliding_window_pattern=2,
    )
    vision = m.VisionConfig(
        model_type="siglip_vision_model",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        patch_size=2,
        image_size=16,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="gemma3",
            vocab_size=128,
            image_token_index=IMAGE,
            hidden_size=32,
            pad_token_id=0,
        )
    )
    return model, _prompt(IMAGE), mx.random.normal((1, 3, 16, 16)), {}


def _idefics(kind):
    m = _module(kind)
    text = m.TextConfig(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        rms_norm_eps=1e-6,
        vocab_size=128,
        num_key_value_heads=2,
        num_hidden_layers=2,
    )
    vision = m.VisionConfig(
        model_type="idefics3",
        hidden_size=32,
        num_attention_heads=4,
        patch_size=2,
        num_hidden_layers=2,
        intermediate_size=64,
        image_size=16,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type=kind,
            scale_factor=2,
            image_token_id=IMAGE,
            vocab_size=128,
        )
    )
    return model, _prompt(IMAGE), mx.random.normal((1, 1, 3, 16, 16)), {}


def idefics3():
    return _idefics("idefics3")


def smolvlm():
    return _idefics("smolvlm")


def mistral3():
    m = _module("mistral3")
    text = m.TextConfig(
        model_type="mistral",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        rms_norm_eps=1e-6,
        vocab_size=128,
        num_key_value_heads=2,
        head_dim=8,
        rope_theta=10000.0,
    )
    vision = m.VisionConfig(
        model_type="pixtral",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        patch_size=2,
        image_size=16,
        head_dim=8,
    )
    model = m.Model(
        m.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="mistral3",
            image_token_index=IMAGE,
            vocab_size=128,
            spatial_merge_size=2,
        )
    )
    return model, _prompt(IMAGE), mx.random.normal((1, 3, 16, 16)), {"image_sizes": mx.array([[16, 16]])}


BUILDERS = {
    f.__name__: f
    for f in (
        llava,
        llava_next,
        llava_onevision,
        qwen2_vl,
        qwen2_5_vl,
        qwen3_vl,
        gemma3,
        idefics3,
        smolvlm,
        mistral3,
    )
}


def available(name: str) -> bool:
    """Whether the installed mlx-vlm has the family's module."""
    try:
        _module(name)
    except ImportError:
        return False
    return True


def build(name: str, **options):
    """Seeded tiny model and one prompt of family ``name``."""
    mx.random.seed(0)
    return BUILDERS[name](**options)
