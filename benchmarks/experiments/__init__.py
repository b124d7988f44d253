"""The paper's experiments, one module each: landmarks (Tables 2-4, Fig. 7), segmentation (Table 1, Fig. 6), the K ablation (Fig. 5)."""
