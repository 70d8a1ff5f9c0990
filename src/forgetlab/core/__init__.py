"""The shared layer every paper uses: models and their architecture tables, neurons and their hooks, the training
loop, evaluation, statistics, tokenization, figures, small helpers."""
