"""Maps a provider kind to its adapter class, importing the adapter (and its cloud SDK)
only when that kind is used, so the web process never loads SDKs it does not need."""

from __future__ import annotations

from importlib import import_module

from providers.adapters.base import Adapter

_ADAPTERS = {
    "aws": "providers.adapters.aws:AwsCostExplorerAdapter",
    "gcp": "providers.adapters.gcp:GcpBillingExportAdapter",
    "azure": "providers.adapters.azure:AzureCostManagementAdapter",
    "focus": "providers.adapters.focus:FocusAdapter",
}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        module_name, class_name = _ADAPTERS[kind].split(":")
    except KeyError:
        raise LookupError(f"no adapter for provider kind {kind!r}") from None
    return getattr(import_module(module_name), class_name)
