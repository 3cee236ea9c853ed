"""Batch inference of trained ControlNets, image grids and reports."""

from common.quiet_warnings import silence_known_warnings

silence_known_warnings()
