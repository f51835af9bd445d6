set terminal pngcairo size 1100,600 font 'Sans,11'
set output "docs/plots/gemv_steps_h200_2026-11-30_s26.png"
set title "decode step at batch 1, Qwen2.5-VL-7B shapes, H200 (median ms; lower is better)" noenhanced
set grid ytics
set key outside right noenhanced
set yrange [0:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'ms per decode step'
set xtics rotate by -30 noenhanced
$data << EOD
shape "at::linear (VLM2MLA_GEMV=0)" "one-row kernel (VLM2MLA_GEMV=1)" "1.3x the floor (goal)"
"4k x 1 gqa" 4.691 4.320 4.499
"4k x 1 mla:32:bf16" 4.967 4.784 4.443
"4k x 1 mla:32:int4" 5.116 4.778 4.378
"16k x 1 gqa" 4.802 4.485 4.704
"16k x 1 mla:32:bf16" 5.042 4.742 4.507
"16k x 1 mla:32:int4" 5.266 5.005 4.390
"32k x 1 gqa" 5.156 4.830 5.025
"32k x 1 mla:32:bf16" 5.361 5.127 4.593
"32k x 1 mla:32:int4" 5.601 5.195 4.462
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
