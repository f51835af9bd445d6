set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session40_wgmma_overlap_h200_2026-12-02_s40.png"
set title "wgmma decode kernel without producers (int4, 0p2c): dequantization behind the MMAs, H200, 32k keys a sequence (4k: last group)" noenhanced
set grid ytics
set key top center horizontal noenhanced
set bmargin 5
set yrange [0.88:1.07]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'time / the kernel before (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, µs a call, one build and one call (call 1,
# docs/bench/wgmma_overlap_kernel_calls1-3_h200_2026-12-02_s40.log), each over the 0p2c kernel as it was (PDL on).
# Temporary instances: "RoPE half late": its dequantization while the latent's 8 S^T MMAs run; "+ latent ahead": the
# next tile's latent half while O^T's MMAs run; "finite maxima": kNoMax and max + kSlack kept; "all three": main
# since session 40. "no PDL": the kernel as it was, launched plainly. Qwen2.5-VL-7B sizes, D = 32, groups of 64, a
# 128-position window; "one set": n_mod 1; "text": two sets over text; "prompt2304": one 2,304-token image a context;
# "runs": alternating runs of 576.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "RoPE half late" "+ latent ahead" "finite maxima" "all three (main)" "no PDL"
"one set\nb = 1" 1.000 1.009 1.005 1.000 1.036
"one set\nb = 8" 0.995 0.997 0.985 0.967 1.036
"one set\nb = 32" 0.973 0.973 0.973 0.930 1.013
"one set\nb = 256" 0.963 0.955 0.972 0.921 0.998
"text\nb = 8" 0.981 0.986 0.986 0.962 1.019
"text\nb = 32" 0.962 0.970 0.981 0.932 1.011
"text\nb = 256" 0.966 0.962 0.984 0.930 1.003
"text\nb = 768" 0.964 0.965 0.978 0.928 0.999
"prompt2304\nb = 32" 0.968 0.967 0.985 0.946 1.007
"prompt2304\nb = 256" 0.970 0.966 0.980 0.944 1.003
"runs\nb = 32" 0.982 0.994 0.984 0.998 1.004
"4k, one set\nb = 1" 1.006 1.006 1.000 1.013 1.032
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, \
     $data using 4:xtic(1) title columnheader, $data using 5:xtic(1) title columnheader, \
     $data using 6:xtic(1) title columnheader
