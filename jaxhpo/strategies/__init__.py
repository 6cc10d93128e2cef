"""Search strategies: pure ``init`` / ``ask`` / ``tell`` / ``best`` over the unit cube."""

from .base import Strategy
from .cmaes import CMAES, SepCMAES
from .de import DifferentialEvolution
from .ga import GeneticAlgorithm
from .gpbo import GPBO
from .grid import GridSearch
from .local_search import LocalSearch
from .motpe import MOTPE
from .nsga2 import NSGA2
from .quasirandom import QuasiRandom
from .random import RandomSearch
from .tpe import TPE

__all__ = [
    "Strategy", "GridSearch", "RandomSearch", "QuasiRandom",
    "CMAES", "SepCMAES", "DifferentialEvolution", "GeneticAlgorithm", "LocalSearch", "NSGA2", "TPE", "MOTPE", "GPBO",
]
