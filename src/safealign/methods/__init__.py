"""Training methods by name. A method computes the loss of one micro-batch; the loop does the rest."""

from safealign.methods.lisa import Lisa
from safealign.methods.sft import SFT

METHODS = {
    "sft": SFT,
    "lisa": Lisa,
}
