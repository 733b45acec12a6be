"""Placeholder main job: select tokens of random features and print the certificate."""

import numpy as np

import tops_core

rng = np.random.default_rng(0)
features = rng.normal(size=(576, 64)).astype(np.float32)
attention = rng.dirichlet(np.ones(576)).astype(np.float32)
sim = tops_core.cosine(features)
for name, objective in [("certified objective", None), ("TOPS rule", tops_core.TOPSRule())]:
    sel = tops_core.select(attention, sim, 64, objective=objective)
    print(f"{name:20s} kept {sel.indices.size} of 576, value {sel.value:.2f}, "
          f"certificate {sel.ratio:.3f} of the optimum at least ({sel.method})")
