set terminal pngcairo size 1300,620 font 'Sans,11'
set output "docs/plots/progress_floor_ratio_h200_s22_s41.png"
set multiplot layout 1,2 title "Decode steps over their floor (weights + cache at the copy rate), Qwen2.5-VL-7B shapes, D = 32, H200, sessions 22-41 (lower is better; issue 5's goal: 1.3x)" noenhanced
set grid
set key top right noenhanced
set xlabel 'session'
set ylabel 'step / floor'
set xrange [21.5:41.5]
set xtics 22,1,41
set yrange [0.9:2.3]
set datafile missing "NaN"
# From BENCHMARKS.md's "Where things stand" table (each session's own rows there); a range is given as its middle;
# NaN: not measured that session (sessions 23 and 27 timed MLA only; 30 and 37-41 measured int4's changes alone;
# 34-36 timed no whole steps: the wgmma kernel was probed and rebuilt, then taken by kAuto over int4 in 37).
$k4 << EOD
session gqa bf16 int4
22 1.51 1.64 1.79
23 NaN 1.625 1.69
24 1.43 1.60 1.64
25 1.365 1.495 1.54
26 1.24 1.385 1.415
27 NaN 1.34 1.39
28 1.22 1.345 NaN
29 1.21 1.30 1.35
31 1.22 1.31 1.36
32 1.22 1.30 1.35
33 1.22 1.31 1.38
37 NaN NaN 1.35
38 NaN NaN 1.33
39 NaN NaN 1.35
40 NaN NaN 1.34
41 NaN NaN 1.33
EOD
$k32x8 << EOD
session gqa bf16 int4
22 1.19 1.78 2.19
23 NaN 1.58 1.94
24 1.22 1.54 1.84
25 1.145 1.45 1.775
26 1.13 1.43 1.76
27 NaN 1.455 1.78
28 NaN 1.385 1.725
29 1.17 1.40 1.71
30 NaN NaN 1.73
31 1.08 1.355 1.66
32 1.11 1.34 1.65
33 1.10 1.35 1.62
37 NaN NaN 1.535
38 NaN NaN 1.50
39 NaN NaN 1.50
40 NaN NaN 1.495
41 NaN NaN 1.49
EOD
set title '4k x 1' noenhanced
plot $k4 using 1:2 with linespoints lw 2 pt 7 title 'GQA (original)', \
     $k4 using 1:3 with linespoints lw 2 pt 5 title 'MLA bf16 latent', \
     $k4 using 1:4 with linespoints lw 2 pt 9 title 'MLA int4 latent', \
     1.3 with lines dt 2 lw 2 lc rgb 'black' title 'goal 1.3x'
set title '32k x 8' noenhanced
plot $k32x8 using 1:2 with linespoints lw 2 pt 7 title 'GQA (original)', \
     $k32x8 using 1:3 with linespoints lw 2 pt 5 title 'MLA bf16 latent', \
     $k32x8 using 1:4 with linespoints lw 2 pt 9 title 'MLA int4 latent', \
     1.3 with lines dt 2 lw 2 lc rgb 'black' title 'goal 1.3x'
unset multiplot
