"""The bundled demo model's recipe: procedural data, a small Wan VAE, two training stages, assembly."""
