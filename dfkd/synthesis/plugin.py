"""Built-in plugin: the standard loss terms, registered by import string so that listing them
does not import torch."""

from dfkd import hookimpl

_LOSSES = {
    "kd_kl": "KL(teacher || student) at temperature T, times T^2",
    "bn_statistics": "distance of batch to running BatchNorm statistics, summed over layers",
    "one_hot_ce": "cross-entropy of the teacher against targets or its own argmax",
    "class_balance": "negative entropy of the batch-mean teacher prediction",
    "activation_l1": "negative mean absolute teacher feature activation",
    "adversarial_kl": "negative (optionally masked) KL(teacher || student) per sample",
    "js_divergence": "clamped Jensen-Shannon divergence between student and teacher",
    "adversarial_l1": "negative mean absolute difference of student and teacher logits",
    "tv_l1": "total variation, mean absolute difference over four neighbour directions",
    "tv_l2": "total variation, L2 norm of differences over four neighbour directions",
    "l2_prior": "mean per-image L2 norm",
}


@hookimpl
def register_losses(register):
    for name, summary in _LOSSES.items():
        register(name, f"dfkd.synthesis.losses:{name}", summary)
