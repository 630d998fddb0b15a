// lk-load-test runs LiveKit CLI's load tester (livekit-cli/v2/pkg/loadtester,
// the code behind `lk load-test`) with the same flags. scripts/install-test-deps
// builds it (loadtest/gopeers.py pins the versions): cmd/lk itself does not
// build from the Go module proxy, whose livekit/protocol and server-sdk-go
// versions are either not the ones cmd/lk pins or changed an API it calls.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/livekit/livekit-cli/v2/pkg/loadtester"
	"github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

func main() {
	url := flag.String("url", os.Getenv("LIVEKIT_URL"), "server URL (ws://host:port)")
	apiKey := flag.String("api-key", os.Getenv("LIVEKIT_API_KEY"), "API key")
	apiSecret := flag.String("api-secret", os.Getenv("LIVEKIT_API_SECRET"), "API secret")
	room := flag.String("room", "", "room name (default: random)")
	duration := flag.Duration("duration", 0, "how long to run (default: until interrupted)")
	videoPublishers := flag.Int("video-publishers", 0, "participants publishing video")
	audioPublishers := flag.Int("audio-publishers", 0, "participants publishing audio")
	subscribers := flag.Int("subscribers", 0, "participants subscribing to every track")
	identityPrefix := flag.String("identity-prefix", "", "identity prefix of the testers")
	resolution := flag.String("video-resolution", "high", "high, medium or low")
	codec := flag.String("video-codec", "", "h264 or vp8 (both when unset)")
	perSecond := flag.Float64("num-per-second", 5, "testers started per second")
	layout := flag.String("layout", "speaker", "speaker, 3x3, 4x4 or 5x5")
	noSimulcast := flag.Bool("no-simulcast", false, "publish one layer")
	speakers := flag.Bool("simulate-speakers", false, "fire random speaker events")
	verbose := flag.Bool("verbose", false, "SDK logs")
	flag.Parse()
	if *url == "" || *apiKey == "" || *apiSecret == "" {
		fmt.Fprintln(os.Stderr, "lk-load-test: --url, --api-key and --api-secret are required")
		os.Exit(2)
	}
	if !*verbose {
		lksdk.SetLogger(logger.LogRLogger(logr.Discard()))
	}
	params := loadtester.Params{
		VideoPublishers:  *videoPublishers,
		AudioPublishers:  *audioPublishers,
		Subscribers:      *subscribers,
		VideoResolution:  *resolution,
		VideoCodec:       *codec,
		Duration:         *duration,
		NumPerSecond:     *perSecond,
		Simulcast:        !*noSimulcast,
		SimulateSpeakers: *speakers,
		TesterParams: loadtester.TesterParams{
			URL:            *url,
			APIKey:         *apiKey,
			APISecret:      *apiSecret,
			Room:           *room,
			IdentityPrefix: *identityPrefix,
			Layout:         loadtester.LayoutFromString(*layout),
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := loadtester.NewLoadTest(params).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lk-load-test:", err)
		os.Exit(1)
	}
}
