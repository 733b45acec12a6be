"""Tiny random Hugging Face VLMs built from configs (no hub, no downloads) and prompts for them."""

import torch
import transformers
from tops_adapters.hf.compat import image_size_to_num_patches

LLAVA_IMAGE = 99
LLAVA_N = 16  # 4 x 4 patches
QWEN_IMAGE, QWEN_START, QWEN_END = 120, 122, 123
QWEN_N = 16  # an 8 x 8 patch grid merged 2 x 2
_QWEN_TEXT = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
)
_QWEN_TOKENS = dict(
    image_token_id=QWEN_IMAGE,
    video_token_id=121,
    vision_start_token_id=QWEN_START,
    vision_end_token_id=QWEN_END,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def _clip_and_llama(max_positions):
    vision = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
    )
    text = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=max_positions,
    )
    return vision, text


def tiny_llava(seed=0):
    """LLaVA-1.5 shaped: CLIP tower (CLS, penultimate layer), Llama LM with 4 layers."""
    torch.manual_seed(seed)
    vision, text = _clip_and_llama(256)
    config = transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=LLAVA_IMAGE,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return transformers.LlavaForConditionalGeneration(config).eval()


def llava_prompt():
    """One unpadded prompt: 3 text tokens, 16 image tokens, 5 text tokens."""
    torch.manual_seed(1)
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * LLAVA_N + [7, 8, 9, 10, 11]])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 16, 16)}


def tiny_llava_next():
    """LLaVA-NeXT shaped: anyres crops of 16 x 16 pixels, image_newline tokens."""
    torch.manual_seed(0)
    vision, text = _clip_and_llama(512)
    config = transformers.LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=LLAVA_IMAGE,
        vision_feature_layer=-2,
        image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
    )
    return transformers.LlavaNextForConditionalGeneration(config).eval()


@torch.no_grad()
def llava_next_prompt(model):
    """One unpadded 30 x 20 image prompt and the packed image features the model makes of it."""
    torch.manual_seed(1)
    sizes = torch.tensor([[30, 20]])
    crops = image_size_to_num_patches(sizes[0], model.config.image_grid_pinpoints, 16)
    pixels = torch.randn(1, crops, 3, 16, 16)
    features = torch.cat(model.model.get_image_features(pixels, sizes).pooler_output)
    ids = torch.tensor([[1, 5] + [LLAVA_IMAGE] * features.shape[0] + [7, 8, 9]])
    return {"input_ids": ids, "pixel_values": pixels, "image_sizes": sizes}, features


def tiny_qwen(kind):
    """Qwen2-VL (``kind="qwen2_vl"``) or Qwen2.5-VL (``"qwen2_5_vl"``): M-RoPE, 2 x 2 patch merger."""
    torch.manual_seed(0)
    if kind == "qwen2_vl":
        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            num_heads=4,
            patch_size=2,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        config = transformers.Qwen2VLConfig(vision_config=vision, text_config=_QWEN_TEXT, **_QWEN_TOKENS)
        return transformers.Qwen2VLForConditionalGeneration(config).eval()
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        patch_size=2,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=8,
        out_hidden_size=32,
        fullatt_block_indexes=[1],
    )
    config = transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=_QWEN_TEXT, **_QWEN_TOKENS)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_prompt():
    """One unpadded prompt with an 8 x 8 patch image (16 tokens after merging)."""
    torch.manual_seed(1)
    ids = torch.tensor([[3, 4, QWEN_START] + [QWEN_IMAGE] * QWEN_N + [QWEN_END, 5, 6, 7, 8]])
    return {
        "input_ids": ids,
        "mm_token_type_ids": (ids == QWEN_IMAGE).int(),
        "pixel_values": torch.randn(64, 3 * 2 * 2 * 2),
        "image_grid_thw": torch.tensor([[1, 8, 8]]),
    }


# ---------------------------------------------------------------------------- the 2026 families
# Every builder returns a model; every prompt is one unpadded row with 16 image tokens (IMAGE_N),
# text before and after, as the family's processor would lay it out.
IMAGE_N = 16
_TEXT = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    head_dim=8,
)
_SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
_QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    patch_size=2,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=32,
)


def tiny_family(kind):
    """A tiny random model of ``config.model_type == kind`` (one of NEW_FAMILIES)."""
    torch.manual_seed(0)
    if kind == "llava_onevision":
        config = transformers.LlavaOnevisionConfig(
            vision_config=dict(model_type="siglip_vision_model", image_size=16, patch_size=4, **_SIGLIP),
            text_config=dict(model_type="qwen2", **_TEXT),
            image_token_id=LLAVA_IMAGE,
            image_grid_pinpoints=[[16, 16], [16, 32], [32, 16], [32, 32]],
        )
        return transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    if kind == "mistral3":
        config = transformers.Mistral3Config(
            vision_config=dict(model_type="pixtral", image_size=32, patch_size=4, head_dim=8, **_SIGLIP),
            text_config=dict(model_type="mistral", **_TEXT),
            image_token_id=LLAVA_IMAGE,
            spatial_merge_size=2,
        )
        return transformers.Mistral3ForConditionalGeneration(config).eval()
    if kind == "internvl":
        config = transformers.InternVLConfig(
            vision_config=dict(image_size=[32, 32], patch_size=[4, 4], **_SIGLIP),
            text_config=dict(model_type="qwen2", **_TEXT),
            image_token_id=LLAVA_IMAGE,
            downsample_ratio=0.5,
        )
        return transformers.InternVLForConditionalGeneration(config).eval()
    if kind in ("idefics3", "smolvlm"):
        cls = transformers.Idefics3Config if kind == "idefics3" else transformers.SmolVLMConfig
        config = cls(
            vision_config=dict(image_size=32, patch_size=4, **_SIGLIP),
            text_config=dict(model_type="llama", **_TEXT),
            image_token_id=LLAVA_IMAGE,
            scale_factor=2,
        )
        model = (
            transformers.Idefics3ForConditionalGeneration
            if kind == "idefics3"
            else transformers.SmolVLMForConditionalGeneration
        )
        return model(config).eval()
    if kind == "gemma3":
        config = transformers.Gemma3Config(
            vision_config=dict(image_size=32, patch_size=4, **_SIGLIP),
            text_config=dict(
                _TEXT, sliding_window=8, layer_types=["sliding_attention", "full_attention"] * 2
            ),
            mm_tokens_per_image=IMAGE_N,
            image_token_index=LLAVA_IMAGE,
            boi_token_index=97,
            eoi_token_index=98,
        )
        return transformers.Gemma3ForConditionalGeneration(config).eval()
    tokens = dict(image_token_id=QWEN_IMAGE, video_token_id=121)
    if kind == "qwen3_vl":
        config = transformers.Qwen3VLConfig(
            vision_config=dict(_QWEN_VISION, deepstack_visual_indexes=[0, 1], num_position_embeddings=64),
            text_config=dict(_TEXT, rope_parameters=dict(_MROPE, mrope_interleaved=True)),
            vision_start_token_id=QWEN_START,
            vision_end_token_id=QWEN_END,
            **tokens,
        )
        return transformers.Qwen3VLForConditionalGeneration(config).eval()
    if kind == "qwen3_5":
        config = transformers.Qwen3_5Config(
            vision_config=dict(_QWEN_VISION, num_position_embeddings=64),
            text_config=dict(
                _TEXT,
                layer_types=["linear_attention", "full_attention"] * 2,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                rope_parameters=dict(_MROPE, mrope_interleaved=True, partial_rotary_factor=0.5),
            ),
            vision_start_token_id=QWEN_START,
            vision_end_token_id=QWEN_END,
            **tokens,
        )
        return transformers.Qwen3_5ForConditionalGeneration(config).eval()
    if kind == "glm4v":
        config = transformers.Glm4vConfig(
            vision_config=dict(_QWEN_VISION, image_size=16, out_hidden_size=64),
            # partial rotary: half of each 16-wide head is rotated, M-RoPE sections over its 4 frequencies
            text_config=dict(
                _TEXT, hidden_size=64, head_dim=16, rope_parameters=dict(_MROPE, partial_rotary_factor=0.5)
            ),
            image_start_token_id=QWEN_START,
            image_end_token_id=QWEN_END,
            **tokens,
        )
        return transformers.Glm4vForConditionalGeneration(config).eval()
    raise ValueError(kind)


NEW_FAMILIES = [
    "llava_onevision",
    "mistral3",
    "internvl",
    "qwen3_vl",
    "gemma3",
    "idefics3",
    "smolvlm",
    "glm4v",
    "qwen3_5",
]
MROPE_FAMILIES = ("qwen3_vl", "qwen3_5", "glm4v")


@torch.no_grad()
def family_prompt(kind, model):
    """One unpadded prompt for ``tiny_family(kind)``: 3 text tokens, the image's tokens, 4 text tokens."""
    torch.manual_seed(1)
    if kind in MROPE_FAMILIES:
        ids = torch.tensor([[3, 4, QWEN_START] + [QWEN_IMAGE] * IMAGE_N + [QWEN_END, 5, 6, 7]])
        return {
            "input_ids": ids,
            "mm_token_type_ids": (ids == QWEN_IMAGE).int(),
            "pixel_values": torch.randn(64, 3 * 2 * 2 * 2),
            "image_grid_thw": torch.tensor([[1, 8, 8]]),
        }
    extra = {}
    if kind == "llava_onevision":
        sizes = torch.tensor([[16, 16]])
        pixels = torch.randn(1, 2, 3, 16, 16)  # the base image and one anyres crop
        extra = {"image_sizes": sizes}
        n = sum(f.shape[0] for f in model.model.get_image_features(pixels, sizes).pooler_output)
    elif kind in ("idefics3", "smolvlm"):
        pixels, n = torch.randn(1, 1, 3, 32, 32), IMAGE_N
    else:
        pixels, n = torch.randn(1, 3, 32, 32), IMAGE_N
        if kind == "mistral3":
            extra = {"image_sizes": torch.tensor([[32, 32]])}
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * n + [7, 8, 9, 10]])
    prompt = {"input_ids": ids, "pixel_values": pixels, **extra}
    if kind == "gemma3":
        prompt["token_type_ids"] = (ids == LLAVA_IMAGE).long()
    return prompt
