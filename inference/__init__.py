"""Batch inference of trained ControlNets, image grids and reports."""

from data.quiet_warnings import silence_known_warnings

silence_known_warnings()
