"""The MuJoCo simulator: scene, tasks with scripted experts, and a gymnasium-style interface."""
