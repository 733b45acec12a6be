"""Tiny random Hugging Face VLMs built from configs (no hub, no downloads) and prompts for them."""

import torch
import transformers
from tops_adapters.hf.compat import image_size_to_num_patches

LLAVA_IMAGE = 99
LLAVA_N = 16  # 4 x 4 patches
QWEN_IMAGE, QWEN_START, QWEN_END = 120, 122, 123
QWEN_N = 16  # an 8 x 8 patch grid merged 2 x 2
_QWEN_TEXT = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
_QWEN_TOKENS = dict(image_token_id=QWEN_IMAGE, video_token_id=121, vision_start_token_id=QWEN_START,
                    vision_end_token_id=QWEN_END, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _clip_and_llama(max_positions):
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                           num_attention_heads=4, image_size=16, patch_size=4)
    text = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                    max_position_embeddings=max_positions)
    return vision, text


def tiny_llava(seed=0):
    """LLaVA-1.5 shaped: CLIP tower (CLS, penultimate layer), Llama LM with 4 layers."""
    torch.manual_seed(seed)
    vision, text = _clip_and_llama(256)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=LLAVA_IMAGE,
                                      vision_feature_layer=-2, vision_feature_select_strategy="default")
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
    config = transformers.LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=LLAVA_IMAGE,
                                          vision_feature_layer=-2,
                                          image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]])
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
        vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=2, spatial_merge_size=2,
                      temporal_patch_size=2)
        config = transformers.Qwen2VLConfig(vision_config=vision, text_config=_QWEN_TEXT, **_QWEN_TOKENS)
        return transformers.Qwen2VLForConditionalGeneration(config).eval()
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=8, out_hidden_size=32,
                  fullatt_block_indexes=[1])
    config = transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=_QWEN_TEXT, **_QWEN_TOKENS)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_prompt():
    """One unpadded prompt with an 8 x 8 patch image (16 tokens after merging)."""
    torch.manual_seed(1)
    ids = torch.tensor([[3, 4, QWEN_START] + [QWEN_IMAGE] * QWEN_N + [QWEN_END, 5, 6, 7, 8]])
    return {"input_ids": ids, "mm_token_type_ids": (ids == QWEN_IMAGE).int(),
            "pixel_values": torch.randn(64, 3 * 2 * 2 * 2), "image_grid_thw": torch.tensor([[1, 8, 8]])}
