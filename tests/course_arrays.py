"""Compute the course network's arrays of every analysis, for the regression test.

Run as ``python tests/course_arrays.py OUT.npz``: it imports whichever ``cnnlab`` is
first on ``sys.path`` (the test runs it once on this tree and once on a copy of the
code before the Probe change), so it only calls functions whose signatures both have.
"""

import sys

import numpy as np
import torch


def main(out: str) -> None:
    import cnnlab
    from cnnlab import attribution, filters, occlusion

    torch.manual_seed(0)
    model = cnnlab.build_model().eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    extractor = cnnlab.feature_extractor(model)
    arrays = {
        "features": cnnlab.extract_features(extractor, images, progress=False,
                                            precision="fp32"),
        "occlusion": occlusion.occlusion_maps(extractor, images, units=[1, 14]),
        "activation_maps": filters.activation_maps(model, images[0], layer=3),
    }
    units, classes = [1, 14, 127], [0, 3, 9]
    for method in attribution.METHODS:
        options = {"n_samples": 3} if method == "smoothgrad" else {}
        if method == "integrated_gradients":
            options = {"steps": 5}
        arrays[f"{method}_units"] = attribution.attribute(method, extractor, images, units,
                                                          **options)
        arrays[f"{method}_classes"] = attribution.attribute(method, model, images, classes,
                                                            **options)
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
