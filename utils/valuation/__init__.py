"""HMG-Net second-hand valuation: listings, features, the model's parts, training, baselines, attribution."""
