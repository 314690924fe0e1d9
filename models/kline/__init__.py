"""The K-line foundation model: bars as a language of two-level tokens, forecast autoregressively.

``spec`` (the window and its fields), ``normalize`` (per-window z-scores), ``tokenizer`` (BSQ
autoencoder: coarse + fine code per bar), ``transformer`` (causal, explicit KV cache),
``generate`` (temperature / top-p sampling, seeded), ``forecast`` (sample paths and the in-loop
summary), ``train`` (tokenizer then transformer, into the registry), ``loop`` (the engine's
forecast predictor), ``evaluate`` (against naive baselines). Importing this package never imports
torch; the modules that build networks do.
"""
