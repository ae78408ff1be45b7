"""Neural forecasters: networks (nn.Module) apart from the LightningModules that train them."""

from models.neural.network import MlpHarNet, NetworkConfig

__all__ = ["MlpHarNet", "NetworkConfig"]
