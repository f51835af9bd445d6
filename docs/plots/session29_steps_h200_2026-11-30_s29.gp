set terminal pngcairo size 1300,650 font 'Sans,11'
set output "docs/plots/session29_steps_h200_2026-11-30_s29.png"
set title "Decode step, Qwen2.5-VL-7B shapes, H200, session 29: each switch off and on, alternated in one call (ms, lower is better)" noenhanced
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
shape "switch off" "switch on" "1.3x the floor (goal)"
"RoPE in the write: MLA bf16 4k x 1" 4.485 4.420 4.382
"RoPE in the write: MLA int4 4k x 1" 4.595 4.550 4.353
"RoPE in the write: MLA bf16 32k x 1" 4.725 4.650 4.498
"RoPE in the write: MLA int4 32k x 1" 4.850 4.810 4.416
"RoPE in the write: MLA bf16 32k x 8" 6.050 6.005 5.533
"RoPE in the write: MLA int4 32k x 8" 6.330 6.270 4.722
"norm in gate/up: GQA 4k x 1" 4.185 4.265 4.496
"norm in gate/up: MLA bf16 4k x 1" 4.480 4.945 4.389
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
