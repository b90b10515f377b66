"""A net whose train and eval graphs differ.

In training it also computes an auxiliary head (deep supervision) and adds feature
noise; in eval it returns the main logits only. torch.fx records ``self.training`` as a
Python bool, so the two traced graphs hold different nodes: ``aux_head``, ``aux_head.fc``
and the noise nodes exist only in train mode.

    fxexport nodes models/train_eval.py:build --mode both   # marks train-only nodes

Example:
    >>> from fxexport import get_graph_node_names
    >>> train_nodes, eval_nodes = get_graph_node_names(build())
    >>> [n for n in train_nodes if n not in eval_nodes][:2]
    ['randn_like', 'mul']
"""

import torch
from torch import nn


class AuxHead(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class TrainEvalNet(nn.Module):
    example_input_shape = (1, 3, 32, 32)

    def __init__(self, num_classes: int = 10, noise: float = 0.1):
        super().__init__()
        self.noise = noise
        self.stage1 = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.aux_head = AuxHead(16, num_classes)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stage1(x)
        if self.training:
            x = x + torch.randn_like(x) * self.noise
            aux = self.aux_head(x)
        x = self.stage2(x)
        logits = self.fc(self.dropout(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1)))
        if self.training:
            return {"logits": logits, "aux": aux}
        return {"logits": logits}


def build(num_classes: int = 10, noise: float = 0.1, seed: int = 0) -> TrainEvalNet:
    """The train/eval net, seeded by ``seed`` (the same weights for the same seed), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TrainEvalNet(num_classes, noise).eval()
