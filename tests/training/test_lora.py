import numpy as np
import torch
from safetensors.torch import load_file

from kaleido_s2v.training.lora import LORA_WEIGHTS, load_lora_into_pipeline
from kaleido_s2v.training.trainer import Trainer
from tiny_components import TINY_TRANSFORMER_CONFIG, tiny_pipeline, tiny_transformer
from training.training_helpers import latent_dataset, tiny_config


def test_lora_trains_only_adapters_and_loads_into_the_pipeline(tmp_path):
    overrides = dict(
        max_steps=3,
        model=dict(config=dict(TINY_TRANSFORMER_CONFIG)),  # the pipeline's tiny transformer, seed 0
        optimizer=dict(lr=5e-2),
        lora=dict(rank=4, alpha=4.0),
    )
    trainer = Trainer(tiny_config(tmp_path, **overrides), dataset=latent_dataset(channels=16))
    base = {k: v.clone() for k, v in tiny_transformer(seed=0).state_dict().items()}
    assert all("lora_" in name for name in trainer.trainable)
    export = trainer.train().export_dir

    after = trainer.model.state_dict()
    for name, tensor in base.items():
        live = after.get(
            name,
            after.get(name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")),
        )
        assert torch.equal(tensor, live), f"base weight {name} changed"
    saved = load_file(export / LORA_WEIGHTS)
    assert saved and all(k.startswith("transformer.") and ".lora_" in k for k in saved)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())

    pipeline = tiny_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)

    def generate():
        return pipeline(
            "a cat walks",
            reference_images=[np.full((32, 32, 3), 200, np.uint8)],
            height=64,
            width=64,
            num_frames=5,
            num_inference_steps=2,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(0),
        ).frames[0]

    before = generate()
    assert np.array_equal(generate(), before)  # the comparison below is not seed noise
    load_lora_into_pipeline(pipeline, export)
    loaded = {k: v for k, v in pipeline.transformer.state_dict().items() if "lora_B" in k}
    assert len(loaded) == sum("lora_B" in k for k in saved)
    assert np.abs(generate().astype(np.float64) - before.astype(np.float64)).max() > 0
