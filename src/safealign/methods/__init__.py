"""Training methods by name. A method computes the loss of one micro-batch; the loop does the rest."""

from safealign.methods.booster import Booster
from safealign.methods.dpo import DPO
from safealign.methods.ewc import EWC
from safealign.methods.fabe import FABE
from safealign.methods.lisa import Lisa
from safealign.methods.orpo import ORPO
from safealign.methods.rmu import RMU
from safealign.methods.safe_mm_dpo import SafeMMDPO
from safealign.methods.score import CostModel, RewardModel
from safealign.methods.sft import SFT
from safealign.methods.t_vaccine import TVaccine
from safealign.methods.unlearning import FT, GA, GAKL, KL, NPO, GradDiff, SimNPO
from safealign.methods.unlearning_rewrite import CL, IDK, RL
from safealign.methods.vaccine import Vaccine

METHODS = {
    "sft": SFT,
    "lisa": Lisa,
    "vaccine": Vaccine,
    "t_vaccine": TVaccine,
    "booster": Booster,
    "ewc": EWC,
    "reward_model": RewardModel,
    "cost_model": CostModel,
    "dpo": DPO,
    "safe_mm_dpo": SafeMMDPO,
    "fabe": FABE,
    "orpo": ORPO,
    "ga": GA,
    "graddiff": GradDiff,
    "npo": NPO,
    "ga_kl": GAKL,
    "simnpo": SimNPO,
    "ft": FT,
    "kl": KL,
    "cl": CL,
    "idk": IDK,
    "rl": RL,
    "rmu": RMU,
}
