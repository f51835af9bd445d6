set terminal pngcairo size 1300,650 font 'Sans,11'
set output "docs/plots/session28_steps_h200_2026-11-30_s28.png"
set title "Decode step, Qwen2.5-VL-7B shapes, H200, session 28: each change against the code without it, one call each (ms, lower is better)" noenhanced
set grid ytics
set key top left noenhanced
set yrange [0:8]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'ms per decode step (mean of the runs medians)'
set xtics rotate by -30 noenhanced
set rmargin 14
set bmargin 11
$data << EOD
shape "without the change" "with it" "1.3x the floor (goal)"
"tile copy + ex2: MLA bf16 4k x 1" 4.630 4.640 4.394
"tile copy + ex2: MLA bf16 32k x 8" 6.030 6.040 5.512
"tile copy + ex2: MLA int4 32k x 8" 6.410 6.260 4.719
"early trigger: MLA bf16 4k x 1" 4.625 4.640 4.407
"early trigger: MLA bf16 32k x 8" 6.040 6.080 5.564
"GEMV folds: GQA 4k x 1" 4.250 4.725 4.459
"GEMV folds: MLA bf16 4k x 1" 4.580 5.225 4.368
"GEMV folds: MLA bf16 32k x 1" 4.825 5.290 4.485
"first tile early: MLA bf16 4k x 1" 4.580 4.565 4.394
"first tile early: MLA bf16 32k x 8" 6.180 5.965 5.610
"SiLU x up epilogue: GQA 4k x 1" 4.335 4.210 4.498
"SiLU x up epilogue: MLA bf16 4k x 1" 4.620 4.555 4.407
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
