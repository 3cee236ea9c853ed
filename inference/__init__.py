"""Batch inference of trained ControlNets, image grids and reports."""
