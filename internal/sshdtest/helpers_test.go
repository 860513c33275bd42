package sshdtest

import (
	"strconv"
	"time"
)

func sleep()            { time.Sleep(10 * time.Millisecond) }
func itoa(i int) string { return strconv.Itoa(i) }
