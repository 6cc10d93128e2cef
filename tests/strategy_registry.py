"""Every strategy joins the shared test matrix (tests/test_strategy_matrix.py) here.

Each entry builds a strategy for the matrix's small mixed space (4
parameters: float, log-float, int, 3-way categorical) with
``MATRIX_POPSIZE`` points per generation. Add one line per strategy.
"""

import jaxhpo

MATRIX_POPSIZE = 8

STRATEGIES = {}
STRATEGIES["random"] = lambda space: jaxhpo.RandomSearch(space, MATRIX_POPSIZE)
STRATEGIES["grid"] = lambda space: jaxhpo.GridSearch(space, MATRIX_POPSIZE, num=3)
from jaxhpo.strategies.quasirandom import QuasiRandom  # noqa: E402
STRATEGIES["sobol"] = lambda space: QuasiRandom(space, MATRIX_POPSIZE, "sobol")
STRATEGIES["halton"] = lambda space: QuasiRandom(space, MATRIX_POPSIZE, "halton")
STRATEGIES["lhs"] = lambda space: QuasiRandom(space, MATRIX_POPSIZE, "lhs")
from jaxhpo.strategies.de import DifferentialEvolution  # noqa: E402
from jaxhpo.strategies.ga import GeneticAlgorithm  # noqa: E402
from jaxhpo.strategies.local_search import LocalSearch  # noqa: E402
STRATEGIES["de"] = lambda space: DifferentialEvolution(space, MATRIX_POPSIZE)
STRATEGIES["ga"] = lambda space: GeneticAlgorithm(space, MATRIX_POPSIZE)
STRATEGIES["local_search"] = lambda space: LocalSearch(space, MATRIX_POPSIZE)
from jaxhpo.strategies.cmaes import CMAES, SepCMAES  # noqa: E402
STRATEGIES["cmaes"] = lambda space: CMAES(space, MATRIX_POPSIZE)
STRATEGIES["sep_cmaes"] = lambda space: SepCMAES(space, MATRIX_POPSIZE)
from jaxhpo.strategies.tpe import TPE  # noqa: E402
STRATEGIES["tpe"] = lambda space: TPE(space, MATRIX_POPSIZE, capacity=32, multivariate=False)
STRATEGIES["tpe_multivariate"] = lambda space: TPE(space, MATRIX_POPSIZE, capacity=32, multivariate=True)
from jaxhpo.strategies.gpbo import GPBO  # noqa: E402
# Small acquisition settings: the matrix checks mechanics, test_gpbo.py quality.
STRATEGIES["gpbo"] = lambda space: GPBO(space, MATRIX_POPSIZE, capacity=64, num_candidates=64, num_local=32,
                                        restarts=4, acq_steps=10)
