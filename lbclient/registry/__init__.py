"""Registries: where instances come from."""

from lbclient._answer import AnswerReader, Instances, SkippedEntry
from lbclient.registry._base import NoWatch, Registry, SnapshotSink, Subscription
from lbclient.registry._uri import available_schemes, registry_class, registry_from_uri
from lbclient.registry._watch import LoopWatch, TaskWatch, ThreadWatch, WatchPolicy, async_watch
from lbclient.registry.static import StaticRegistry

__all__ = [
    "AnswerReader",
    "Instances",
    "LoopWatch",
    "NoWatch",
    "Registry",
    "SkippedEntry",
    "SnapshotSink",
    "StaticRegistry",
    "Subscription",
    "TaskWatch",
    "ThreadWatch",
    "WatchPolicy",
    "async_watch",
    "available_schemes",
    "registry_class",
    "registry_from_uri",
]
