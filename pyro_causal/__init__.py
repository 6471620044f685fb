from .densities import make_density
