"""glmv's training pipeline: vision-encoder pretraining -> pretrain -> long-context/video -> SFT (thinking and not)
-> RL (GRPO + curriculum).

Recipes are YAML files (glmv/train/recipes/); `glmv train RECIPE.yaml` runs one stage, `--resume` continues it.
"""
