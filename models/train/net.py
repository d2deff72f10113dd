"""Compact ResNet-style nose-print embedder: GeM pooling, BN-neck, 512-d L2-normalised output.

The exported graph takes (N,3,224,224) RGB in [0,1]; mean/std normalisation lives inside it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class GeM(nn.Module):
    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class NoseEmbedder(nn.Module):
    """ResNet-18 layout at reduced width (widths configurable), 512-d embedding."""

    def __init__(self, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2), dim=512, stem_stride=2):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        w0 = widths[0]
        # two strided convs (4x down) keep the first layer at full resolution, where
        # the beads are only a few pixels wide, but cheap
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0 // 2, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w0 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(w0 // 2, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
        )
        layers = []
        cin = w0
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = GeM()
        self.fc = nn.Linear(cin, dim, bias=False)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)

    def features(self, x):
        x = (x - self.mean) / self.std
        x = self.layers(self.stem(x))
        return self.neck(self.fc(self.pool(x)))

    def forward(self, x):
        return F.normalize(self.features(x), dim=1)


BACKBONES = ("default", "facerec", "mobilenetv2")


def Net(backbone="default", dim=512, **kw):
    """Embedder by backbone name. "default": NoseEmbedder (trained from scratch, kw as NoseEmbedder);
    "facerec" / "mobilenetv2": pretrained.PretrainedEmbedder, a backbone converted from npm tfjs
    weights (run models/train/fetch-weights.sh first) with the same head: linear `dim` + BN-neck +
    L2 norm. All take (N,3,224,224) RGB in [0,1] and return (N,dim) L2-normalised embeddings."""
    if backbone in (None, "default"):
        return NoseEmbedder(dim=dim, **kw)
    try:
        from pretrained import PretrainedEmbedder
    except ImportError:
        from .pretrained import PretrainedEmbedder
    return PretrainedEmbedder(backbone, dim=dim, **kw)
